"""Figure 5: ReLabel's confidence against the crop's IoU with the labelled object's box.

Random crops of the val images (the crops of Figure 2, at least 100,000 in all), each pooled from the image's
label map (LabelPooling, local_multi); confidence = the largest class probability of the pooled label. The val
maps come from the annotator and label-map settings of the training maps (`student_labelmaps(..., split="val")`).
The plot bins crops by IoU (IoU = 0 on its own, then steps of 0.1): mean confidence and its 10th-90th percentile
band. The paper: confidence follows the object's presence, and is below 0.6 when the crop misses the object.
Writes figure5_bins.csv (the plotted bins per seed) beside the PNG.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from repro import results
from repro.boxes import boxes_file, iou_bins, val_boxes
from repro.claims import FAILS, HOLDS, NO_DATA, Claim
from repro.experiment import Collected, Context, Experiment
from repro.labelmaps.analysis import crop_confidences
from repro.pipeline import data_root, labelmaps_specs, student_labelmaps
from repro.plotting import plt, wrapped_title

MIN_CROPS = 100_000
MODEL = "none"
ZERO_BIN = "iou_zero"
# the paper's bound on the confidence of crops that miss the object
UPPER_AT_IOU_ZERO = float(results.reported_for("figure5")["value"].iloc[0])


def collect(ctx: Context) -> Collected:
    cfg = ctx.config
    val = val_boxes(data_root(cfg, ctx.runs_root), cfg["data"])
    maps = student_labelmaps(cfg, ctx.runs_root, split="val")
    crops_per_image = math.ceil(MIN_CROPS / len(val))
    rows, tables = [], []
    for seed in ctx.seeds:
        ious, confidences = crop_confidences(maps, val, crops_per_image, seed, cfg["supervision"]["variant"])
        bins = iou_bins(ious, confidences)
        tables.append(bins.assign(seed=seed, source=val.source, crops_per_image=crops_per_image))
        for row in bins.itertuples(index=False):
            rows.append({"model": MODEL, "setting": row.bin, "seed": seed, "metric": "mean_confidence",
                         "value": row.mean})
            rows.append({"model": MODEL, "setting": row.bin, "seed": seed, "metric": "crops", "value": row.crops})
        zero = bins[bins.bin == ZERO_BIN]
        if len(zero):
            rows.append({"model": MODEL, "setting": ZERO_BIN, "seed": seed, "metric": "confidence_at_iou_zero",
                         "value": float(zero["mean"].iloc[0])})
    return Collected(results.measurements(rows), {"bins": pd.concat(tables)})


def plot(summary: pd.DataFrame, measured: pd.DataFrame, tables: dict, path: Path, title: str) -> None:
    bins = tables["bins"]
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    for i, (seed, part) in enumerate(bins.groupby("seed")):
        part = part.sort_values("iou_centre")
        ax.fill_between(part.iou_centre, part.q10, part.q90, color="#4C72B0", alpha=0.18,
                        label="10th-90th percentile" if i == 0 else None)
        ax.plot(part.iou_centre, part["mean"], "o-", color="#4C72B0", ms=4,
                label="mean ReLabel confidence" if i == 0 else None)
    ax.axhline(1.0, color="0.4", ls="--", lw=1, label="original label (one-hot): always 1")
    ax.plot([0.0], [UPPER_AT_IOU_ZERO], "v", color="#C44E52", ms=9, zorder=3,
            label=f"paper: below {UPPER_AT_IOU_ZERO:g} at IoU = 0 (ImageNet)")
    ax.set_xlim(-0.02, 1.0)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("IoU of the random crop with the ground-truth box (bins: IoU = 0, then steps of 0.1)")
    ax.set_ylabel(r"confidence of the pooled label, $\max_c L(c)$")
    ax.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8)
    crops = int(bins[bins.seed == bins.seed.min()].crops.sum())
    ax.set_title(wrapped_title(title, f"{bins.source.iloc[0]}: {crops:,} crops "
                                      f"({bins.crops_per_image.iloc[0]} per image) x {bins.seed.nunique()} seed(s)",
                               width=70), fontsize=9)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(path, dpi=150)
    plt.close(fig)


def rises_with_iou(measured: pd.DataFrame) -> tuple[str, str]:
    """Mean confidence in the highest IoU bin that holds crops exceeds that at IoU = 0, for every seed."""
    confidence = measured[measured.metric == "mean_confidence"]
    if confidence.empty or ZERO_BIN not in set(confidence.setting):
        return NO_DATA, "no crops at IoU = 0"
    top_bin = max(set(confidence.setting) - {ZERO_BIN}, key=lambda name: float(name.split("-")[-1]))
    per_seed = confidence.pivot_table(index="seed", columns="setting", values="value")[[ZERO_BIN, top_bin]]
    differences = (per_seed[top_bin] - per_seed[ZERO_BIN]).dropna()
    verdict = HOLDS if len(differences) and (differences > 0).all() else FAILS
    return verdict, (f"mean confidence {top_bin} {per_seed[top_bin].mean():.3f} vs IoU = 0 "
                     f"{per_seed[ZERO_BIN].mean():.3f} (n={len(differences)} seeds)")


EXPERIMENT = Experiment(
    name="figure5",
    title="ReLabel confidence against crop IoU with the ground-truth box",
    paper_ref="Figure 5",
    collect=collect,
    plot=plot,
    plan=lambda ctx: labelmaps_specs(ctx.config, "val"),
    inputs=lambda ctx: boxes_file(ctx.config["data"]),
    metrics=["confidence_at_iou_zero"],
    claims=[
        Claim("ReLabel's confidence rises with the crop's overlap with the object", kind="custom",
              check=rises_with_iou),
        Claim(f"confidence below {UPPER_AT_IOU_ZERO:g} when the crop misses the object (IoU = 0)", kind="range",
              metric="confidence_at_iou_zero", better=ZERO_BIN, low=0.0, high=UPPER_AT_IOU_ZERO),
    ],
)
