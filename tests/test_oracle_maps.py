"""Table 10's multi-label targets on hand-made masks: the oracle map from segmentation masks, each way a pooled
map becomes a BCE target, and the machine annotator's dense map."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from repro.labelmaps.oracle import machine_targets, mask_label_map, oracle_targets

C = 8


def _masks():
    small = np.zeros((64, 64), dtype=bool)
    small[4:12, 4:12] = True          # class 2: a small object in the top-left quarter
    large = np.zeros((64, 64), dtype=bool)
    large[40:60, 40:60] = True        # class 5: a larger one in the bottom-right quarter
    second = np.zeros((64, 64), dtype=bool)
    second[20:24, 20:24] = True       # another instance of class 2, also top-left
    return [(2, small), (5, large), (2, second)]


def _targets(boxes, **kwargs):
    values, ids = mask_label_map(_masks(), grid=16)
    batch = len(boxes)
    return oracle_targets(values.expand(batch, -1, -1, -1), ids.expand(batch, -1, -1, -1),
                          torch.tensor(boxes, dtype=torch.float32), C, **kwargs)


def test_the_oracle_map_holds_each_class_share_of_every_cell():
    values, ids = mask_label_map(_masks(), grid=16)
    assert values.shape == ids.shape == (2, 16, 16) and ids[:, 0, 0].tolist() == [2, 5]
    assert values[0, 1:3, 1:3].eq(1).all() and values[0].sum() * 16 == pytest.approx(8 * 8 + 4 * 4)  # cells of 4 px
    assert values[1, 10:15, 10:15].eq(1).all() and values[:, 15, :].sum() == 0
    empty_values, _ = mask_label_map([], grid=4)
    assert empty_values.sum() == 0


def test_a_crop_covering_an_object_gets_near_1_and_one_missing_it_near_0():
    top_left, bottom_right = [0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]
    share = _targets([top_left, bottom_right])
    assert share[0, 2] > 0.95 and share[0, 5] < 0.02      # covers both class-2 instances, misses class 5
    assert share[1, 5] > 0.95 and share[1, 2] < 0.02
    assert share[:, [0, 1, 3, 4, 6, 7]].abs().max() == 0  # absent classes
    cut = _targets([[0.5, 0.5, 50 / 64, 1.0]])[0, 5]       # cuts class 5's square at its middle column
    assert 0.4 < cut < 0.6


def test_crop_share_and_presence_are_the_other_readings():
    top_left = [[0.0, 0.0, 0.5, 0.5]]
    crop = _targets(top_left, target="crop_share")[0, 2]
    assert crop == pytest.approx((64 + 16) / (32 * 32), abs=0.02)  # small objects: a small share of the crop
    assert _targets(top_left, target="presence")[0].tolist() == [0, 0, 1, 0, 0, 0, 0, 0]
    assert _targets([[0.5, 0.5, 50 / 64, 1.0]], target="presence", threshold=0.6)[0, 5] == 0
    with pytest.raises(ValueError, match="unknown oracle target 'area'"):
        _targets(top_left, target="area")


def test_machine_maps_are_sigmoids_of_pooled_logits_over_every_class():
    logits = torch.full((1, C, 8, 8), -6.0)
    logits[0, 3, :, :4] = 6.0                              # class 3 in the left half
    ids = torch.arange(C)[None, :, None, None].expand(1, C, 8, 8)
    left, right = torch.tensor([[0.0, 0.0, 0.5, 1.0]]), torch.tensor([[0.5, 0.0, 1.0, 1.0]])
    assert machine_targets(logits, ids, left, C)[0, 3] > 0.99 and machine_targets(logits, ids, right, C)[0, 3] < 0.01
    assert machine_targets(logits, ids, left, C)[0, 0] < 0.01
    with pytest.raises(ValueError, match="must hold all 8 classes"):
        machine_targets(logits[:, :5], ids[:, :5], left, C)
