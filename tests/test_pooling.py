import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from repro.crops import crop_rng, sample_rrc_boxes
from repro.pooling import (densify, global_pool_logits, mix_with_original, pool_labels, roi_axis_weights,
                           roi_pool_logits)


def random_maps(batch, k, height, width, classes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(batch, k, height, width, generator=gen) * 3
    values = values.sort(dim=1, descending=True).values
    ids = torch.rand(batch, classes, height, width, generator=gen).argsort(dim=1)[:, :k]
    return values, ids


def random_boxes(batch, seed=0, min_size=0.02):
    gen = torch.Generator().manual_seed(seed)
    x1y1 = torch.rand(batch, 2, generator=gen) * 0.9
    size = min_size + torch.rand(batch, 2, generator=gen) * 0.9
    return torch.cat([x1y1, (x1y1 + size).clamp(max=1.0)], dim=1)


def dense_reference(values, ids, boxes, classes, aligned=True, sampling_ratio=-1, shift=0.0):
    """torchvision's roi_align on the densified map (the official code's computation)."""
    dense = densify(values, ids, classes)
    height, width = values.shape[-2:]
    scaled = boxes * torch.tensor([width, height, width, height], dtype=boxes.dtype) + shift
    rois = torch.cat([torch.arange(len(boxes), dtype=boxes.dtype)[:, None], scaled], dim=1)
    return roi_align(dense, rois, (1, 1), 1.0, sampling_ratio, aligned=aligned).flatten(1)


def halves_map(classes=10, height=15, width=15, left=3, right=7):
    """Top-2 map: the left half says `left` (logit 8, runner-up `right` at 1), the right half the reverse."""
    values = torch.zeros(1, 2, height, width)
    ids = torch.zeros(1, 2, height, width, dtype=torch.long)
    half = width // 2
    values[0, 0], values[0, 1] = 8.0, 1.0
    ids[0, 0, :, :half], ids[0, 1, :, :half] = left, right
    ids[0, 0, :, half:], ids[0, 1, :, half:] = right, left
    return values, ids


@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("shape", [(15, 15), (6, 10)])
def test_sparse_pooling_equals_dense_roi_align(sampling_ratio, shape):
    values, ids = random_maps(32, 5, *shape, classes=40)
    boxes = random_boxes(32)
    sparse = roi_pool_logits(values, ids, boxes, 40, sampling_ratio)
    dense = dense_reference(values, ids, boxes, 40, sampling_ratio=sampling_ratio)
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=1e-5)


def test_edge_and_tiny_boxes_match_dense_roi_align():
    values, ids = random_maps(6, 3, 15, 15, classes=12, seed=1)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.99, 0.99, 1.0, 1.0], [0.0, 0.5, 0.01, 0.52],
                          [0.2, 0.0, 0.2, 1.0], [0.5, 0.5, 0.5333, 0.5667], [0.93, 0.0, 1.0, 0.07]])
    for sampling_ratio in (-1, 1, 3):
        torch.testing.assert_close(roi_pool_logits(values, ids, boxes, 12, sampling_ratio),
                                   dense_reference(values, ids, boxes, 12, sampling_ratio=sampling_ratio),
                                   atol=1e-5, rtol=1e-5)


def test_official_unaligned_shift_is_pixel_centre_alignment():
    # the official code: roi_align(aligned=False) on box * size - 0.5; identical for boxes at least a cell wide
    values, ids = random_maps(32, 5, 15, 15, classes=30, seed=2)
    boxes = random_boxes(32, seed=2, min_size=1 / 15)
    official = dense_reference(values, ids, boxes, 30, aligned=False, shift=-0.5)
    torch.testing.assert_close(roi_pool_logits(values, ids, boxes, 30), official, atol=1e-5, rtol=1e-5)


def test_rrc_crops_from_the_crop_sampler_match_dense_roi_align():
    width, height = 500, 375
    pixel_boxes = sample_rrc_boxes(width, height, 64, crop_rng(0, 0))
    boxes = torch.as_tensor(pixel_boxes / [width, height, width, height], dtype=torch.float32)
    values, ids = random_maps(64, 5, 15, 15, classes=50, seed=3)
    torch.testing.assert_close(roi_pool_logits(values, ids, boxes, 50), dense_reference(values, ids, boxes, 50),
                               atol=1e-5, rtol=1e-5)


def test_whole_image_box_is_the_global_average():
    values, ids = random_maps(8, 5, 15, 15, classes=20, seed=4)
    whole = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(8, 4)
    mean = densify(values, ids, 20).mean(dim=(2, 3))
    torch.testing.assert_close(roi_pool_logits(values, ids, whole, 20), mean, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(global_pool_logits(values, ids, 20), mean, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(pool_labels(values, ids, whole, 20, "local_multi"),
                               pool_labels(values, ids, whole, 20, "global_multi"), atol=1e-6, rtol=1e-6)


def test_axis_weights_of_the_whole_axis_are_uniform():
    weights = roi_axis_weights(torch.tensor([0.0]), torch.tensor([15.0]), 15)
    torch.testing.assert_close(weights, torch.full((1, 15), 1 / 15))


def test_horizontal_flip_mirrors_the_box():
    values, ids = random_maps(16, 5, 15, 15, classes=25, seed=5)
    boxes = random_boxes(16, seed=5)
    mirrored = torch.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], dim=1)
    torch.testing.assert_close(roi_pool_logits(values.flip(-1), ids.flip(-1), mirrored, 25),
                               roi_pool_logits(values, ids, boxes, 25), atol=1e-5, rtol=1e-5)


def test_left_crop_of_a_left_right_map_gives_the_left_class():
    values, ids = halves_map(left=3, right=7)
    left = torch.tensor([[0.0, 0.1, 0.4, 0.9]])
    right = torch.tensor([[0.6, 0.1, 1.0, 0.9]])
    left_target = pool_labels(values, ids, left, 10)[0]
    assert left_target.argmax() == 3 and left_target[3] > 0.95
    assert pool_labels(values, ids, right, 10)[0].argmax() == 7
    assert torch.equal(pool_labels(values, ids, left, 10, "local_single")[0], F.one_hot(torch.tensor(3), 10).float())
    # a crop straddling the border mixes both classes, in proportion to its overlap with each half
    straddle = pool_labels(values, ids, torch.tensor([[0.3, 0.0, 0.7, 1.0]]), 10)[0]
    assert straddle[3] > 0.2 and straddle[7] > 0.2


def test_x_is_the_column_and_y_the_row():
    values, ids = halves_map(left=3, right=7)
    top_bottom = (values.transpose(2, 3), ids.transpose(2, 3))  # class 3 in the top rows, 7 in the bottom rows
    top = torch.tensor([[0.0, 0.0, 1.0, 0.4]])
    assert pool_labels(*top_bottom, top, 10)[0].argmax() == 3
    assert pool_labels(*top_bottom, torch.tensor([[0.0, 0.6, 1.0, 1.0]]), 10)[0].argmax() == 7
    # the official (y1, x1, y2, x2) order applied to the left-right map would read the top band as a left crop
    assert pool_labels(values, ids, top[:, [1, 0, 3, 2]], 10)[0].argmax() == 3
    assert pool_labels(values, ids, top, 10)[0][3] < 0.9


def test_classes_outside_the_topk_have_logit_zero():
    values = torch.full((1, 1, 4, 4), -5.0)
    ids = torch.full((1, 1, 4, 4), 2)
    target = pool_labels(values, ids, torch.tensor([[0.0, 0.0, 0.5, 0.5]]), 4)[0]
    expected = torch.tensor([0.0, 0.0, -5.0, 0.0]).softmax(dim=0)
    torch.testing.assert_close(target, expected)


@pytest.mark.parametrize("variant", ["local_multi", "local_single", "global_multi", "global_single"])
def test_variants_against_their_dense_definitions(variant):
    values, ids = random_maps(16, 5, 15, 15, classes=30, seed=6)
    boxes = random_boxes(16, seed=6)
    pooled = (dense_reference(values, ids, boxes, 30) if variant.startswith("local")
              else densify(values, ids, 30).mean(dim=(2, 3)))
    expected = pooled.softmax(dim=1) if variant.endswith("multi") else F.one_hot(pooled.argmax(1), 30).float()
    target = pool_labels(values, ids, boxes, 30, variant)
    torch.testing.assert_close(target, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(target.sum(dim=1), torch.ones(16))


def test_mix_with_original():
    values, ids = random_maps(4, 5, 15, 15, classes=10, seed=7)
    targets = pool_labels(values, ids, random_boxes(4, seed=7), 10)
    labels = torch.tensor([1, 2, 3, 4])
    mixed = mix_with_original(targets, labels, 0.5)
    torch.testing.assert_close(mixed, 0.5 * targets + 0.5 * F.one_hot(labels, 10).float())
    torch.testing.assert_close(mixed.sum(dim=1), torch.ones(4))
    torch.testing.assert_close(mix_with_original(targets, F.one_hot(labels, 10).float(), 0.5), mixed)
    torch.testing.assert_close(mix_with_original(targets, labels, 0.0), targets)
    with pytest.raises(ValueError, match="mixing weight"):
        mix_with_original(targets, labels, 1.5)


def test_bad_input_is_refused():
    values, ids = random_maps(2, 5, 15, 15, classes=10)
    boxes = random_boxes(2)
    with pytest.raises(ValueError, match="variant"):
        pool_labels(values, ids, boxes, 10, "local")
    with pytest.raises(ValueError, match="one shape"):
        pool_labels(values, ids[:, :3], boxes, 10)


def test_pooling_is_deterministic_and_float64_capable():
    values, ids = random_maps(8, 5, 15, 15, classes=10, seed=8)
    boxes = random_boxes(8, seed=8)
    first = roi_pool_logits(values, ids, boxes, 10)
    assert torch.equal(first, roi_pool_logits(values, ids, boxes, 10))
    wide = roi_pool_logits(values.double(), ids, boxes.double(), 10)
    np.testing.assert_allclose(wide.numpy(), first.numpy(), atol=1e-5)
