"""Figure A3: training images with a random crop, the original label and the crop's ReLabel label.

The crops are the ones the first seed's student sees in its first epoch (`repro.labelmaps.analysis.
epoch_crop_boxes`, the trainer's sampler and generators), pooled from the training label maps (LabelPooling,
local_multi). Over a seeded sample of training images it measures how confident those labels are and how often
their top class is not the original label; the gallery shows the first examples of that sample whose ReLabel
top class differs from the original label and as many whose top class agrees (the paper shows selected ones).
Writes figureA3_gallery.csv (the shown crops: box, original label, ReLabel's top classes) beside the PNG.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from repro import results
from repro.data.imagenet import open_imagenet
from repro.experiment import Collected, Context, Experiment
from repro.labelmaps.analysis import analysable, epoch_crop_boxes, normalised_crops, pooled_targets
from repro.pipeline import data_root, labelmaps_specs, student_labelmaps
from repro.plotting import plt, wrapped_title

SAMPLE = 2000   # training crops measured (a seeded sample of the training list)
SHOWN_EACH = 4  # shown crops whose ReLabel top class differs from the original label, and as many that agree
TOP_CLASSES = 3
MODEL, SETTING = "none", "first_epoch_crops"


def collect(ctx: Context) -> Collected:
    cfg, seed = ctx.config, ctx.seeds[0]
    root = data_root(cfg, ctx.runs_root)
    data = open_imagenet(root, cfg["data"])
    maps = student_labelmaps(cfg, ctx.runs_root)
    train = data.train
    indices = analysable(train, np.random.default_rng(seed).permutation(len(train))[:SAMPLE], maps,
                         cfg["data"]["skip_unreadable"])
    boxes, sizes = epoch_crop_boxes(train, indices, seed, 0, cfg["train"]["scale"], cfg["train"]["ratio"])
    unit = normalised_crops(boxes, sizes)
    targets = pooled_targets(maps, [train.relpaths[i] for i in indices], unit, cfg["supervision"]["variant"])
    confidence, top = targets.max(dim=1)
    labels = train.labels[indices]
    differs = top.numpy() != labels

    shown = np.concatenate([np.flatnonzero(differs)[:SHOWN_EACH], np.flatnonzero(~differs)[:SHOWN_EACH]])
    gallery = []
    for position in shown:
        probabilities, classes = targets[position].topk(TOP_CLASSES)
        gallery.append({"image": train.relpaths[indices[position]], "path": str(train.path(indices[position])),
                        "training_index": int(indices[position]),
                        "x1": boxes[position][0], "y1": boxes[position][1], "x2": boxes[position][2],
                        "y2": boxes[position][3], "original_label": data.class_names[labels[position]],
                        "relabel_top1_differs": bool(differs[position]),
                        "relabel": "; ".join(f"{data.class_names[c]} {p:.2f}"
                                             for p, c in zip(probabilities.tolist(), classes.tolist()))})

    values = {"crops_measured": len(indices), "mean_relabel_confidence": float(confidence.mean()),
              "fraction_relabel_top1_differs": float(differs.mean()),
              "mean_relabel_confidence_shown": float(confidence[shown].mean())}
    return Collected(results.measurements([{"model": MODEL, "setting": SETTING, "seed": seed, "metric": metric,
                                            "value": value} for metric, value in values.items()]),
                     {"gallery": pd.DataFrame(gallery)})


def plot(summary: pd.DataFrame, measured: pd.DataFrame, tables: dict, path: Path, title: str) -> None:
    gallery = tables["gallery"]
    per_row = 2
    rows = -(-len(gallery) // per_row)
    # a narrow empty column between the examples of a row keeps each image beside its own crop
    fig, axes = plt.subplots(rows, 3 * per_row - 1, figsize=(12.5, 3.3 * rows + 1.2), squeeze=False,
                             gridspec_kw={"width_ratios": ([1, 1, 0.15] * per_row)[:-1]})
    for ax in axes.flat:
        ax.set_axis_off()
    for i, example in enumerate(gallery.itertuples(index=False)):
        with Image.open(example.path) as image:
            image = image.convert("RGB")
        whole, crop = axes[i // per_row, 3 * (i % per_row)], axes[i // per_row, 3 * (i % per_row) + 1]
        whole.imshow(image)
        whole.add_patch(plt.Rectangle((example.x1, example.y1), example.x2 - example.x1, example.y2 - example.y1,
                                      fill=False, edgecolor="#1f5fd6", lw=2.5))
        whole.set_title(textwrap.fill(f"original label: {example.original_label}", 30, break_on_hyphens=False),
                        fontsize=9)
        crop.imshow(image.crop((int(example.x1), int(example.y1), int(example.x2), int(example.y2))))
        lines = [f"{name} ({p})" for name, p in (item.rsplit(" ", 1) for item in example.relabel.split("; "))]
        colour = "#C44E52" if example.relabel_top1_differs else "black"
        crop.set_title("ReLabel: " + "\n".join(lines), fontsize=9, color=colour)
    means = summary.set_index("metric")["mean"]
    fig.suptitle(wrapped_title(
        title, f"blue box: the crop a student sees in its first epoch; right: the crop and its pooled ReLabel label "
               f"(red: top class is not the original label). Over {int(means['crops_measured'])} training crops, "
               f"ReLabel's top class differs from the original label on {means['fraction_relabel_top1_differs']:.0%}; "
               f"mean confidence {means['mean_relabel_confidence']:.2f}", width=120), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


EXPERIMENT = Experiment(
    name="figureA3",
    title="training images with a random crop, the original label and the pooled ReLabel label",
    paper_ref="Figure A3",
    collect=collect,
    plot=plot,
    plan=lambda ctx: labelmaps_specs(ctx.config),
    metrics=["mean_relabel_confidence", "fraction_relabel_top1_differs"],
)
