"""LabelPooling (Section 3.2, Algorithm A1): the target of a random crop pooled from the image's top-k label map.

Conventions
- A label map is sparse: `values` [B, k, H, W] (the annotator's top-k logits at each position) and `ids`
  [B, k, H, W] (their class indices). As in the official code, which scatters the top-k entries into a zero
  tensor [B, C, H, W], every class outside a position's top-k has logit 0 there before pooling and softmax.
- The map covers the whole image (the annotator saw the whole image resized, no crop), so a crop box given in
  normalised image coordinates is a box on the map after scaling x by W and y by H.
- Boxes are (x1, y1, x2, y2) in [0, 1] of the unflipped image, x the column, x2 exclusive: `crops.py`'s pixel
  boxes divided by (width, height, width, height). The official code hands RoIAlign (y1, x1, y2, x2) in those
  slots, i.e. it pools the box mirrored about the diagonal unless its maps are stored transposed; here x is
  always the column. A horizontal flip of the crop does not change its target: pool over the unflipped box.
- RoIAlign convention: pixel-centre alignment, i.e. torchvision's `roi_align(..., aligned=True)` with the box
  scaled to grid units, and torchvision's adaptive sampling (`sampling_ratio=-1`: ceil(box size in cells)
  samples per axis). The official code calls `roi_align(aligned=False)` on `box * W - 0.5`, which is the same
  thing for every box at least one cell wide (all RandomResizedCrop boxes on a 15x15 map are wider than 3.6 cells).

RoIAlign to 1x1 is linear in the map and separable in y and x: the pooled map is sum_hw wy[h] wx[w] L[:, h, w].
So the sparse entries are weighted and scatter-added to their class ids, never densifying [B, C, H, W].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

VARIANTS = ("local_multi", "local_single", "global_multi", "global_single")


def roi_axis_weights(start: torch.Tensor, end: torch.Tensor, size: int, sampling_ratio: int = -1) -> torch.Tensor:
    """RoIAlign's (aligned=True, one output bin) weights along one axis: [B, size], for boxes [start, end) in
    cells. Sampling points and bilinear weights follow torchvision's roi_align kernel exactly."""
    lo = start - 0.5
    length = (end - 0.5) - lo  # as torchvision computes it, so that ceil() below agrees at integer sizes
    if sampling_ratio > 0:
        count = torch.full_like(length, float(sampling_ratio))
    else:
        count = torch.ceil(length).clamp(min=0)
    most = max(int(count.max().item()) if count.numel() else 0, 1)
    step = torch.arange(most, dtype=start.dtype, device=start.device)
    samples = lo[:, None] + (step[None, :] + 0.5) * length[:, None] / count.clamp(min=1)[:, None]  # [B, most]
    used = step[None, :] < count[:, None]
    inside = (samples >= -1.0) & (samples <= size) & used
    pos = samples.clamp(min=0)
    low = pos.floor().long()
    at_end = low >= size - 1
    low = torch.where(at_end, torch.full_like(low, size - 1), low)
    pos = torch.where(at_end, low.to(pos.dtype), pos)
    high = torch.where(at_end, low, low + 1)
    frac = pos - low.to(pos.dtype)
    keep = inside.to(pos.dtype)
    weights = torch.zeros(len(start), size, dtype=start.dtype, device=start.device)
    weights.scatter_add_(1, low, (1 - frac) * keep)
    weights.scatter_add_(1, high, frac * keep)
    return weights / count.clamp(min=1)[:, None]


def _check(values: torch.Tensor, ids: torch.Tensor) -> None:
    if values.dim() != 4 or values.shape != ids.shape:
        raise ValueError(f"label maps must be values and ids of one shape [B, k, H, W], got "
                         f"{tuple(values.shape)} and {tuple(ids.shape)}")


def _scatter(values: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, num_classes: int) -> torch.Tensor:
    """sum over positions of weights[b, h, w] * dense_map[b, c, h, w], from the sparse entries."""
    batch = values.shape[0]
    contrib = (values * weights[:, None]).reshape(batch, -1)
    out = torch.zeros(batch, num_classes, dtype=values.dtype, device=values.device)
    return out.scatter_add_(1, ids.reshape(batch, -1).long(), contrib)


def roi_pool_logits(values: torch.Tensor, ids: torch.Tensor, boxes: torch.Tensor, num_classes: int,
                    sampling_ratio: int = -1) -> torch.Tensor:
    """RoIAlign to 1x1 of the densified map over each box: pooled logits [B, C]."""
    _check(values, ids)
    height, width = values.shape[-2:]
    boxes = boxes.to(values.dtype)
    wy = roi_axis_weights(boxes[:, 1] * height, boxes[:, 3] * height, height, sampling_ratio)
    wx = roi_axis_weights(boxes[:, 0] * width, boxes[:, 2] * width, width, sampling_ratio)
    return _scatter(values, ids, wy[:, :, None] * wx[:, None, :], num_classes)


def global_pool_logits(values: torch.Tensor, ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Average of the densified map over all positions: the whole-image logits [B, C]."""
    _check(values, ids)
    height, width = values.shape[-2:]
    weights = torch.full((values.shape[0], height, width), 1.0 / (height * width), dtype=values.dtype,
                         device=values.device)
    return _scatter(values, ids, weights, num_classes)


def densify(values: torch.Tensor, ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The dense map [B, C, H, W] the official code builds (zeros outside the top-k); for references and plots."""
    _check(values, ids)
    batch, _, height, width = values.shape
    dense = torch.zeros(batch, num_classes, height, width, dtype=values.dtype, device=values.device)
    return dense.scatter_(1, ids.long(), values)


def _one_hot_argmax(logits: torch.Tensor) -> torch.Tensor:
    return F.one_hot(logits.argmax(dim=1), logits.shape[1]).to(logits.dtype)


def pool_labels(values: torch.Tensor, ids: torch.Tensor, boxes: torch.Tensor, num_classes: int,
                variant: str = "local_multi", sampling_ratio: int = -1) -> torch.Tensor:
    """Targets [B, C] for crops `boxes` [B, 4] (normalised x1, y1, x2, y2) of images with maps (values, ids).

    local_multi: RoIAlign then softmax (ReLabel); local_single: RoIAlign then one-hot argmax;
    global_multi: whole-map average then softmax; global_single: whole-map average then one-hot argmax (Table 2).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown LabelPooling variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    values = values.float()
    if variant.startswith("local"):
        logits = roi_pool_logits(values, ids, boxes, num_classes, sampling_ratio)
    else:
        logits = global_pool_logits(values, ids, num_classes)
    if variant.endswith("multi"):
        return logits.softmax(dim=1)
    return _one_hot_argmax(logits)


def mix_with_original(targets: torch.Tensor, labels: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 - weight) * targets + weight * original label (Section 4.1 tries weight 0.5).

    labels are class indices [B] or already per-class targets [B, C].
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"mixing weight must lie in [0, 1], got {weight}")
    if labels.dim() == 1:
        labels = F.one_hot(labels.long(), targets.shape[1])
    return (1.0 - weight) * targets + weight * labels.to(targets.dtype)
