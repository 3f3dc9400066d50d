"""RandomResizedCrop boxes, sampled exactly as torchvision samples them, but vectorised and seedable.

One sampler serves the trainer (its crops), the world's calibration statistics and Figures 2 and 5, so the
crop-overlap numbers describe the crops the students really see. Boxes are (x1, y1, x2, y2) in pixels, x the
column, with x2 = x1 + width (exclusive), as torchvision.ops expects.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

IMAGENET_SCALE = (0.08, 1.0)
IMAGENET_RATIO = (3 / 4, 4 / 3)
ATTEMPTS = 10  # torchvision's RandomResizedCrop.get_params tries 10 times, then falls back to a centre crop


def sample_rrc_boxes(width: int, height: int, n: int, rng: np.random.Generator,
                     scale=IMAGENET_SCALE, ratio=IMAGENET_RATIO) -> np.ndarray:
    """n crop boxes [n, 4] (x1, y1, x2, y2) for a width x height image, following torchvision's get_params."""
    area = width * height
    log_ratio = np.log(ratio)
    target_area = area * rng.uniform(scale[0], scale[1], size=(n, ATTEMPTS))
    aspect = np.exp(rng.uniform(log_ratio[0], log_ratio[1], size=(n, ATTEMPTS)))
    w = np.rint(np.sqrt(target_area * aspect)).astype(np.int64)
    h = np.rint(np.sqrt(target_area / aspect)).astype(np.int64)
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.argmax(axis=1)
    found = valid[np.arange(n), first]
    w = w[np.arange(n), first]
    h = h[np.arange(n), first]
    # torchvision draws the offset uniformly from 0..(size - crop) inclusive
    y = np.floor(rng.random(n) * (height - h + 1)).astype(np.int64)
    x = np.floor(rng.random(n) * (width - w + 1)).astype(np.int64)
    if not found.all():
        fw, fh = _fallback_size(width, height, ratio)
        w = np.where(found, w, fw)
        h = np.where(found, h, fh)
        x = np.where(found, x, (width - fw) // 2)
        y = np.where(found, y, (height - fh) // 2)
    return np.stack([x, y, x + w, y + h], axis=1).astype(np.float64)


def _fallback_size(width: int, height: int, ratio) -> tuple[int, int]:
    in_ratio = width / height
    if in_ratio < min(ratio):
        return width, int(round(width / min(ratio)))
    if in_ratio > max(ratio):
        return int(round(height * max(ratio))), height
    return width, height


def max_iou_with_boxes(crops: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """For each crop, its largest IoU with any of the ground-truth boxes (both [.., 4] x1y1x2y2)."""
    if len(boxes) == 0:
        return np.zeros(len(crops))
    iou = box_iou(torch.as_tensor(crops, dtype=torch.float64), torch.as_tensor(boxes, dtype=torch.float64))
    return iou.max(dim=1).values.numpy()


def crop_iou_fractions(ious: np.ndarray) -> dict[str, float]:
    """The two statistics the paper quotes for ImageNet's crops (Section 1): IoU = 0 and IoU > 0.5."""
    ious = np.asarray(ious)
    return {"iou_zero": float(np.mean(ious <= 0.0)), "iou_gt_0.5": float(np.mean(ious > 0.5))}


def crop_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator fixed by (seed, keys...), e.g. (seed, epoch, image index): crops do not depend on worker order."""
    return np.random.default_rng([seed, *keys])

