"""Multi-label targets of a crop from a label map (Table 10): the oracle map made from segmentation masks, and how
a pooled map becomes a binary cross-entropy target.

- `mask_label_map`: per class, the share of each cell of a grid x grid map that the class's masks cover, as a
  sparse map (values, ids) [k, grid, grid] over the classes present, the layout `repro.pooling` pools.
- `oracle_targets`: LabelPooling's RoIAlign of that map over each crop gives the share of the crop each class
  covers; `target` turns it into a BCE target:
  - "object_share" (the default): the share of the class's mask area that lies inside the crop, at most 1. A BCE
    target says whether a class is in the crop: a crop that holds the whole object says 1 however small the
    object is in it, one that misses it says 0, one that cuts it says how much of it is seen.
  - "crop_share": the share of the crop the class covers (small for a small object even when it is whole).
  - "presence": 1 where object_share >= `threshold`, else 0.
- `machine_targets`: a machine annotator's dense logit map pooled the same way, then a sigmoid (every class is
  stored: a class missing from a sparse map would pool to logit 0, sigmoid 1/2).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from repro.pooling import roi_pool_logits

ORACLE_TARGETS = ("object_share", "crop_share", "presence")


def mask_label_map(masks: Iterable[tuple[int, np.ndarray]], grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, ids) [k, grid, grid] float32 / int64: for each class with a mask, the covered share of every cell
    (the union of its instances' masks, area-averaged to the grid)."""
    union: dict[int, np.ndarray] = {}
    for class_index, mask in masks:
        mask = np.asarray(mask, dtype=bool)
        union[int(class_index)] = union[int(class_index)] | mask if int(class_index) in union else mask
    if not union:
        return torch.zeros(1, grid, grid), torch.zeros(1, grid, grid, dtype=torch.int64)
    classes = sorted(union)
    stacked = torch.from_numpy(np.stack([union[c] for c in classes]).astype(np.float32))
    values = F.adaptive_avg_pool2d(stacked[None], grid)[0]
    ids = torch.tensor(classes, dtype=torch.int64)[:, None, None].expand(-1, grid, grid).contiguous()
    return values, ids


def oracle_targets(values: torch.Tensor, ids: torch.Tensor, boxes: torch.Tensor, num_classes: int,
                   target: str = "object_share", threshold: float = 0.5) -> torch.Tensor:
    """BCE targets [B, C] of crops `boxes` [B, 4] (normalised x1, y1, x2, y2) from oracle maps [B, k, H, W]."""
    if target not in ORACLE_TARGETS:
        raise ValueError(f"unknown oracle target {target!r}: one of {', '.join(ORACLE_TARGETS)}")
    crop_share = roi_pool_logits(values.float(), ids, boxes, num_classes).clamp(0, 1)
    if target == "crop_share":
        return crop_share
    height, width = values.shape[-2:]
    area = torch.zeros(len(values), num_classes, dtype=torch.float32, device=values.device)
    area.scatter_add_(1, ids.reshape(len(ids), -1).long(), values.float().reshape(len(values), -1) / (height * width))
    crop_area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).to(area.dtype)[:, None]
    object_share = torch.where(area > 0, crop_share * crop_area / area.clamp(min=1e-12), torch.zeros_like(area))
    object_share = object_share.clamp(0, 1)
    return object_share if target == "object_share" else (object_share >= threshold).to(object_share.dtype)


def machine_targets(values: torch.Tensor, ids: torch.Tensor, boxes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """BCE targets [B, C] from a machine annotator's logit maps, every class stored: sigmoid of the pooled logits."""
    if values.shape[1] != num_classes:
        raise ValueError(f"a machine multi-label map must hold all {num_classes} classes per position, got "
                         f"{values.shape[1]}: a class left out would pool to logit 0, a target of 1/2")
    return torch.sigmoid(roi_pool_logits(values.float(), ids, boxes, num_classes))
