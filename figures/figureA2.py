"""Figure A2: label maps as heatmaps of their top-1 and top-2 classes, beside the image.

(a) val images that hold objects of at least two classes, with the suite's annotator and label-map settings (the
val maps of `student_labelmaps(..., split="val")`): the embedded world's, or at paper scale ImageNet's images with
at least two ReaL labels. (b) scikit-image's photos with a real ImageNet annotator, EfficientNet-Lite0
(`repro.labelmaps.examples`). The paper (Appendix B): "the top-1 and top-2 heatmaps are disjointly located at each
object's position", on examples whose two top classes are two objects of the image. On the world every object's
visible mask is known, so that is measured over its multi-object val images whose map's top-1 and top-2 classes
are both objects of the image: the share where each class's heatmap peaks on an object of its own class
(`repro.labelmaps.analysis.peaks_on_own_objects`). Where the map's top-2 class is no object of the image (most
images of the world: a class the annotator confuses with the top-1 object) its heatmap has no object of its own,
so the question does not arise; how often both top classes are objects of the image is measured beside it. The
earlier measure, over every multi-object image, whether the two peaks fall in different sets of object boxes
(`peaks_in_different_objects`), is kept as fraction_peaks_in_different_objects. docs/regime.md has the
measurements behind the change. Writes figureA2_peaks.csv (per image: classes present, top-2 classes, peaks,
verdicts) beside the PNG.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from repro import results
from repro.boxes import world_object_masks, world_objects
from repro.claims import FAILS, HOLDS, NO_DATA, Claim
from repro.data.imagenet import open_imagenet
from repro.experiment import Collected, Context, Experiment
from repro.labelmaps.analysis import peaks_in_different_objects, peaks_on_own_objects, top2_peaks
from repro.labelmaps.examples import EXAMPLE_PHOTOS, example_label_maps
from repro.labelmaps.lite0 import imagenet_class_names
from repro.labelmaps.render import render_label_maps
from repro.pipeline import data_root, labelmaps_specs, student_labelmaps
from repro.plotting import plt, wrapped_title

SHOWN = 4
MODEL, SETTING = "none", "multi_object_val"
PANELS = {"a": "figureA2_suite_annotator.png", "b": "figureA2_lite0.png"}


def _multi_object_images(cfg: dict, root: Path, data) -> tuple[dict[str, list[int]], dict[str, np.ndarray],
                                                                 dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Val images with at least two classes present, in the val list's order, with those classes; and (world
    only) the boxes of their objects and their (classes, visible masks)."""
    if cfg["data"]["source"] == "world":
        min_visible = cfg["world"]["real_min_visible"]
        objects = world_objects(root, "val", min_visible)
        present = {p: sorted(set(objects[p][0].tolist())) for p in data.val.relpaths}
        boxes = {p: objects[p][1] for p in data.val.relpaths}
        masks = world_object_masks(root, "val", min_visible)
    else:
        real = next(s.label_sets.get("real", []) for s in data.eval_sets if s.name == "imagenet")
        present, boxes, masks = dict(zip(data.val.relpaths, real)), {}, {}
    chosen = {p: classes for p, classes in present.items() if len(classes) >= 2}
    return chosen, boxes, {p: masks[p] for p in chosen if p in masks}


def collect(ctx: Context) -> Collected:
    cfg = ctx.config
    root = data_root(cfg, ctx.runs_root)
    data = open_imagenet(root, cfg["data"])
    maps = student_labelmaps(cfg, ctx.runs_root, split="val")
    chosen, boxes, masks = _multi_object_images(cfg, root, data)
    records = []
    for relpath, classes in chosen.items():
        values, ids = maps.read(maps.rows_for([relpath]))
        with Image.open(root / relpath) as image:
            width, height = image.size
        (top1, score1, peak1), (top2, score2, peak2) = top2_peaks(values[0], ids[0], maps.num_classes, width, height)
        record = {"image": relpath, "classes_present": ", ".join(data.class_names[c] for c in classes),
                  "top1": data.class_names[top1], "top1_score": score1, "top1_peak_x": peak1[0],
                  "top1_peak_y": peak1[1], "top2": data.class_names[top2], "top2_score": score2,
                  "top2_peak_x": peak2[0], "top2_peak_y": peak2[1]}
        if relpath in boxes:
            record["peaks_in_different_objects"] = peaks_in_different_objects(peak1, peak2, boxes[relpath])
        if relpath in masks:
            own = peaks_on_own_objects((top1, peak1), (top2, peak2), *masks[relpath])
            record["top2_classes_present"] = own is not None
            record["peaks_on_own_objects"] = np.nan if own is None else float(own)
        records.append(record)
    table = pd.DataFrame(records)

    shown = table.head(SHOWN)
    values, ids = maps.read(maps.rows_for(shown.image))
    images = []
    for relpath in shown.image:
        with Image.open(root / relpath) as image:
            images.append(image.convert("RGB"))
    titles = [textwrap.fill(f"{Path(row.image).stem[-8:].lstrip('0')}: {row.classes_present}", 32)
              for row in shown.itertuples(index=False)]
    photos, photo_values, photo_ids = example_label_maps()
    panels = {PANELS["a"]: lambda path: render_label_maps(images, (values, ids), data.class_names, path,
                                                          titles=titles),
              PANELS["b"]: lambda path: render_label_maps(photos, (photo_values, photo_ids), imagenet_class_names(),
                                                          path, titles=list(EXAMPLE_PHOTOS))}

    metrics = {"images": len(table)}
    if "peaks_in_different_objects" in table:
        metrics["fraction_peaks_in_different_objects"] = float(table.peaks_in_different_objects.mean())
    if "peaks_on_own_objects" in table:
        metrics["fraction_top2_classes_present"] = float(table.top2_classes_present.mean())
        metrics["images_top2_classes_present"] = int(table.top2_classes_present.sum())
        if table.top2_classes_present.any():
            metrics["fraction_peaks_on_own_objects"] = float(table.peaks_on_own_objects.mean())  # NaNs skipped
    rows = [{"model": MODEL, "setting": SETTING, "seed": ctx.seeds[0], "metric": metric, "value": value}
            for metric, value in metrics.items()]
    return Collected(results.measurements(rows), {"peaks": table}, files=panels)


def plot(summary: pd.DataFrame, measured: pd.DataFrame, tables: dict, path: Path, title: str) -> None:
    """The two rendered panels stacked, at their own pixel size, each with its caption."""
    path = Path(path)
    panels = [np.asarray(Image.open(path.with_name(PANELS[key])).convert("RGB")) for key in PANELS]
    means = summary.set_index("metric")["mean"]
    fraction = means.get("fraction_peaks_on_own_objects")
    measured_line = ("" if fraction is None else
                     f"; where the top-1 and top-2 classes are both objects of the image "
                     f"({int(means['images_top2_classes_present'])} of the {int(means['images'])} multi-object val "
                     f"images), each heatmap peaks on its own object on {fraction:.0%}")
    captions = [textwrap.fill(f"(a) val images with objects of two or more classes (titled by val number: "
                              f"classes present), the suite's annotator{measured_line}", 120),
                "(b) scikit-image photos, EfficientNet-Lite0 trained on ImageNet"]
    dpi = 100
    width = max(p.shape[1] for p in panels) / dpi
    caption_inches = 0.5
    heights = [p.shape[0] / dpi + caption_inches for p in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, sum(heights) + 0.8), dpi=dpi,
                             gridspec_kw={"height_ratios": heights})
    for ax, panel, caption in zip(axes, panels, captions):
        ax.imshow(panel, interpolation="none")
        ax.set_title(caption, fontsize=10, loc="left")
        ax.set_axis_off()
    fig.suptitle(wrapped_title(title, "each row: image | heatmap of the top-1 class | heatmap of the top-2 class "
                                      "(class scores: softmax of the map's average)", width=110), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def peaks_on_different_objects(measured: pd.DataFrame) -> tuple[str, str]:
    """Holds when, on most multi-object images whose map's top-1 and top-2 classes are both objects of the image,
    each heatmap peaks on its own object."""
    values = measured.groupby("metric")["value"].mean()
    if "fraction_top2_classes_present" not in values:
        return NO_DATA, "no per-object masks (the embedded world has them; ImageNet val does not)"
    images, both = int(values["images"]), int(values["images_top2_classes_present"])
    if "fraction_peaks_on_own_objects" not in values:
        return NO_DATA, f"none of the {images} multi-object val images has its map's top-1 and top-2 classes as objects"
    fraction = float(values["fraction_peaks_on_own_objects"])
    return (HOLDS if fraction > 0.5 else FAILS), (
        f"{fraction:.1%} of the {both} multi-object val images ({values['fraction_top2_classes_present']:.1%} of "
        f"{images}) whose map's top-1 and top-2 classes are both objects of the image")


EXPERIMENT = Experiment(
    name="figureA2",
    title="label-map heatmaps of the top-1 and top-2 classes",
    paper_ref="Figure A2",
    collect=collect,
    plot=plot,
    plan=lambda ctx: labelmaps_specs(ctx.config, "val"),
    metrics=["fraction_peaks_on_own_objects", "fraction_top2_classes_present", "fraction_peaks_in_different_objects"],
    data_dependent_metrics=("fraction_peaks_on_own_objects",),  # needs an image whose top-2 classes are objects
    claims=[Claim("the top-1 and top-2 heatmaps peak each on its own object (a majority of the multi-object images "
                  "whose top-2 classes are both objects of the image)", kind="custom",
                  check=peaks_on_different_objects)],
)
