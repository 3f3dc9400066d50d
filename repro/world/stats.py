"""The calibration statistics: how ImageNet-like the world's crops and label sets are.

Two come from the paper (Section 1, Figure 2): of RandomResizedCrop boxes (scale 0.08-1, ratio 3/4-4/3) on the
validation images, 8% have IoU = 0 with the ground-truth boxes and 23.5% have IoU > 0.5. The third is ReaL's share
of multi-label validation images, computed from the ReaL labels that ship inside timm. The crops come from
repro.crops, the same sampler the trainer and Figure 2 use, so Figure 2 can call `crop_iou_values` on ImageNet's
boxes or the world's.
"""
from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from repro.crops import crop_iou_fractions, crop_rng, max_iou_with_boxes, sample_rrc_boxes

PAPER_IOU_ZERO = 0.08
PAPER_IOU_GT_HALF = 0.235
BANDS = {"iou_zero": 0.02, "iou_gt_0.5": 0.03, "multilabel": 0.03}  # the world's tolerance around each target
DESCRIPTIONS = {
    "iou_zero": "crops with IoU = 0 to the primary box",
    "iou_gt_0.5": "crops with IoU > 0.5 to the primary box",
    "multilabel": "val images with >= 2 classes",
}


def crop_iou_values(boxes_per_image: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]],
                    crops_per_image: int, seed: int) -> np.ndarray:
    """Each crop's largest IoU with its image's boxes: [n_images * crops_per_image], image by image.

    boxes_per_image[i] is a [k, 4] array of (x1, y1, x2, y2) boxes, sizes[i] the image's (width, height); image i's
    crops come from crop_rng(seed, i), so the values do not depend on how the images are batched.
    """
    values = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny IoU computations: more threads only add synchronisation
    try:
        for i, (boxes, (width, height)) in enumerate(zip(boxes_per_image, sizes)):
            crops = sample_rrc_boxes(width, height, crops_per_image, crop_rng(seed, i))
            values.append(max_iou_with_boxes(crops, np.asarray(boxes, dtype=np.float64).reshape(-1, 4)))
    finally:
        torch.set_num_threads(threads)
    return np.concatenate(values) if values else np.zeros(0)


def multilabel_fraction(real_lists: Sequence[Sequence[int]]) -> float:
    """Share of the non-empty label lists that hold at least two classes (ReaL's empty lists mark unusable images)."""
    labelled = [labels for labels in real_lists if len(labels) > 0]
    return sum(len(set(labels)) >= 2 for labels in labelled) / max(len(labelled), 1)


def imagenet_real_labels_path() -> Path:
    """ReaL's labels as timm ships them, found without importing timm (which takes a second)."""
    return Path(importlib.util.find_spec("timm").origin).parent / "data" / "_info" / "imagenet_real_labels.json"


@lru_cache(maxsize=1)
def imagenet_targets() -> dict[str, float]:
    """ImageNet's values of the three statistics: the paper's two crop fractions and ReaL's multi-label share."""
    real = json.loads(imagenet_real_labels_path().read_text())
    return {"iou_zero": PAPER_IOU_ZERO, "iou_gt_0.5": PAPER_IOU_GT_HALF, "multilabel": multilabel_fraction(real)}


def xywh_to_xyxy(box: Sequence[float]) -> list[float]:
    x, y, w, h = box
    return [x, y, x + w, y + h]


def calibration(primary_boxes: Sequence[Sequence[float]], real_lists: Sequence[Sequence[int]], image_size: int,
                crops_per_image: int, seed: int) -> dict[str, float]:
    """The three statistics for one split, from its primary boxes (COCO xywh) and ReaL-style label lists."""
    boxes = [np.array([xywh_to_xyxy(b)]) for b in primary_boxes]
    ious = crop_iou_values(boxes, [(image_size, image_size)] * len(boxes), crops_per_image, seed)
    return {**crop_iou_fractions(ious), "multilabel": multilabel_fraction(real_lists)}


def with_targets(values: dict[str, float]) -> dict[str, dict]:
    """Each statistic beside ImageNet's value, the band the world must keep, and whether it does."""
    targets = imagenet_targets()
    return {key: {"world": round(values[key], 4), "imagenet": round(targets[key], 4), "band": BANDS[key],
                  "in_band": bool(abs(values[key] - targets[key]) <= BANDS[key])}
            for key in BANDS}
