"""Ground-truth boxes of the validation images, and summaries of crops by their overlap with them (Figures 2, 5).

ImageNet: `LOC_val_solution.csv` (the localisation challenge's val boxes; `data.boxes_csv`), one row per image,
"ImageId,PredictionString" with PredictionString "wnid x1 y1 x2 y2 wnid x1 y1 x2 y2 ..." in pixels; the image
sizes come from the val JPEG headers. The embedded world: `annotations/instances_val.json`, the box of the
object flagged `primary` (the one that names the image). Boxes are (x1, y1, x2, y2), as repro.crops uses them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Mapping

import numpy as np
import pandas as pd
from PIL import Image

from repro.data.folders import VAL_SOLUTION, ImageList, read_classes, val_folder
from repro.data.localisation import read_loc_solution
from repro.world.stats import xywh_to_xyxy

@dataclass(frozen=True)
class ValBoxes:
    """The val images (paths relative to the data root, in val-number order, as ReaL lists them), the boxes of
    each one's labelled object ([k, 4] per image) and each image's (width, height); `source` says where they come
    from, in words."""
    relpaths: list[str]
    boxes: list[np.ndarray]
    sizes: list[tuple[int, int]]
    source: str

    def __len__(self) -> int:
        return len(self.relpaths)


def imagenet_val_boxes(val: ImageList, wnids, boxes_csv: str | os.PathLike) -> ValBoxes:
    """The boxes of each val image's own class from LOC_val_solution.csv (val: either val layout, see
    repro.data.folders.val_folder)."""
    solution = read_loc_solution(boxes_csv)
    order = sorted(range(len(val)), key=lambda i: PurePosixPath(val.relpaths[i]).name)
    relpaths, boxes, sizes = [], [], []
    for i in order:
        relpath, wnid = val.relpaths[i], wnids[val.labels[i]]
        stem = PurePosixPath(relpath).stem
        entries = solution.get(stem)
        if entries is None:
            raise KeyError(f"{boxes_csv} has no boxes for val image {stem}")
        own = [box for box_wnid, box in entries if box_wnid == wnid]
        if not own:
            raise ValueError(f"{boxes_csv}: no box of class {wnid} for {stem}")
        with Image.open(val.path(i)) as image:  # reads the header only
            sizes.append(image.size)
        relpaths.append(relpath)
        boxes.append(np.array(own, dtype=np.float64))
    return ValBoxes(relpaths, boxes, sizes, "ImageNet val, LOC_val_solution boxes")


def _coco(root: str | os.PathLike, split: str):
    """The world's COCO annotations of `split`, read by pycocotools (quietly: it prints while indexing)."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(Path(root) / "annotations" / f"instances_{split}.json"))


def world_val_boxes(root: str | os.PathLike) -> ValBoxes:
    """The primary object's box of every val image of the embedded world (COCO annotations)."""
    coco = _coco(root, "val")
    primary = {a["image_id"]: a["bbox"] for a in coco.loadAnns(coco.getAnnIds()) if a.get("primary")}
    images = coco.loadImgs(sorted(coco.getImgIds()))  # the split's order: val number k has id k
    missing = [image["file_name"] for image in images if image["id"] not in primary]
    if missing:
        raise ValueError(f"{root}: no primary object for {len(missing)} val image(s), e.g. {missing[0]}")
    return ValBoxes([image["file_name"] for image in images],
                    [np.array([xywh_to_xyxy(primary[image["id"]])], dtype=np.float64) for image in images],
                    [(int(image["width"]), int(image["height"])) for image in images],
                    "embedded world val, primary boxes")


def world_objects(root: str | os.PathLike, split: str = "val", min_visible: float = 0.0
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """file_name -> (class indices [n], boxes [n, 4]) of every object of a world image that is at least
    `min_visible` visible (the world's real_min_visible gives the objects real.json counts as present)."""
    coco = _coco(root, split)
    names = {image["id"]: image["file_name"] for image in coco.loadImgs(coco.getImgIds())}
    objects: dict[str, tuple[list, list]] = {name: ([], []) for name in names.values()}
    for annotation in coco.loadAnns(coco.getAnnIds()):
        if annotation["visible"] >= min_visible:
            classes, boxes = objects[names[annotation["image_id"]]]
            classes.append(annotation["category_id"] - 1)  # COCO category id = class index + 1
            boxes.append(xywh_to_xyxy(annotation["bbox"]))
    return {name: (np.array(classes, dtype=np.int64), np.array(boxes, dtype=np.float64).reshape(-1, 4))
            for name, (classes, boxes) in objects.items()}


def world_object_masks(root: str | os.PathLike, split: str = "val", min_visible: float = 0.0
                       ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """file_name -> (class indices [n], visible masks [n, H, W] bool) of every object of a world image that is at
    least `min_visible` visible, in `world_objects`' order. A mask holds the pixels where the object shows (what
    occluders and the image border leave of it), so two objects' masks never share a pixel."""
    from pycocotools import mask as mask_utils

    coco = _coco(root, split)
    out = {}
    for image in coco.loadImgs(coco.getImgIds()):
        classes, masks = [], []
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]])):
            if annotation["visible"] >= min_visible:
                rle = dict(annotation["segmentation"])
                if isinstance(rle["counts"], str):
                    rle["counts"] = rle["counts"].encode("ascii")
                classes.append(annotation["category_id"] - 1)
                masks.append(mask_utils.decode(rle).astype(bool))
        out[image["file_name"]] = (np.array(classes, dtype=np.int64),
                                   np.array(masks, dtype=bool).reshape(-1, image["height"], image["width"]))
    return out


def boxes_file(data: Mapping) -> Path | None:
    """ImageNet's val boxes file for the config section `data`: data.boxes_csv, else LOC_val_solution.csv at the
    data root (where ImageNet's download puts it); None for the world, whose boxes are in its annotations. A
    missing file raises, naming it, so the pre-flight check finds it before any run (Experiment.inputs)."""
    if data["source"] == "world":
        return None
    path = Path(data.get("boxes_csv") or Path(data["root"]) / VAL_SOLUTION)
    if not path.is_file():
        raise FileNotFoundError(f"no val boxes file {path}: Figures 2 and 5 read ImageNet's {VAL_SOLUTION}; put it "
                                "there or set data.boxes_csv")
    return path


def val_boxes(root: str | os.PathLike, data: Mapping) -> ValBoxes:
    """The val boxes of the data at `root` (its config section `data`): the world's annotations, or ImageNet's
    (`boxes_file`)."""
    boxes = boxes_file(data)
    if boxes is None:
        return world_val_boxes(root)
    wnids = read_classes(root)[0]
    return imagenet_val_boxes(val_folder(root, wnids, data.get("val_labels") or boxes), wnids, boxes)


def iou_cdf(ious: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The share of crops with IoU <= each threshold."""
    ordered = np.sort(np.asarray(ious, dtype=np.float64))
    return np.searchsorted(ordered, thresholds, side="right") / max(len(ordered), 1)


def iou_bins(ious: np.ndarray, values: np.ndarray, width: float = 0.1) -> pd.DataFrame:
    """`values` summarised per IoU bin: IoU = 0 on its own, then (0, width], (width, 2 width], ... up to 1.

    One row per bin that holds crops: bin, iou_low, iou_high, iou_centre (the mean IoU of its crops), crops,
    mean, std, q10, q90 (the 10th and 90th percentiles of the values)."""
    ious, values = np.asarray(ious, dtype=np.float64), np.asarray(values, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, int(round(1.0 / width)) + 1)
    # bin 0 holds IoU = 0 exactly; bin i >= 1 holds (edges[i-1], edges[i]]
    index = np.where(ious <= 0.0, 0, np.clip(np.searchsorted(edges, ious, side="left"), 1, len(edges) - 1))
    rows = []
    for i in range(len(edges)):
        chosen = index == i
        if not chosen.any():
            continue
        low, high = (0.0, 0.0) if i == 0 else (edges[i - 1], edges[i])
        part = values[chosen]
        rows.append({"bin": "iou_zero" if i == 0 else f"iou_{low:.1f}-{high:.1f}", "iou_low": low, "iou_high": high,
                     "iou_centre": float(ious[chosen].mean()), "crops": int(chosen.sum()),
                     "mean": float(part.mean()), "std": float(part.std()),
                     "q10": float(np.quantile(part, 0.1)), "q90": float(np.quantile(part, 0.9))})
    return pd.DataFrame(rows)
