"""labelmap.transpose: the student reads its maps with H and W swapped."""
import copy
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from repro.config import profile_config, with_changes
from repro.data.folders import image_folder
from repro.labelmaps.maps import TransposedLabelMaps
from repro.labelmaps.official import save_official
from repro.labelmaps.packed import write_packed
from repro.labelmaps.reader import open_labelmaps
from repro.pipeline import labelmaps_ref, official_ref, stored_labelmaps_ref, student_spec
from repro.pooling import pool_labels
from repro.runs import Resources
from repro.steps import open_student_labelmaps
from repro.train.objectives import agreeing_indices

WNIDS = ["n90000000", "n90000001", "n90000002"]
SIZES = [(64, 40), (40, 64), (72, 48), (48, 30)]  # (width, height), never square
TOPK = 5
NUM_CLASSES = 8


def write_official_maps(directory, relpaths, values, ids):
    for relpath, v, i in zip(relpaths, values, ids):
        wnid, name = relpath.split("/")[1:]
        save_official(directory / wnid / f"{name.rsplit('.', 1)[0]}.pt", v, i)
    return directory


def relabel_config(**changes):
    return with_changes(profile_config("smoke"), {"supervision.mode": "relabel", **changes})


@pytest.mark.parametrize("extra", [False, True])
def test_transpose_wraps_the_maps_a_student_reads_and_false_leaves_its_spec_as_before(extra):
    cfg = relabel_config(**{"extra_data.enabled": extra})
    as_stored = student_spec(cfg)
    # the code path before the key existed: a config without it builds the very same spec
    without_key = copy.deepcopy(cfg)
    del without_key["labelmap"]["transpose"]
    assert as_stored == student_spec(without_key)
    assert "transposed" not in json.dumps(as_stored.body)
    assert as_stored["labelmaps"] == stored_labelmaps_ref(cfg)

    transposed = student_spec(with_changes(cfg, {"labelmap.transpose": True}))
    assert transposed.hash != as_stored.hash
    assert transposed["labelmaps"] == {"transposed": as_stored["labelmaps"]}
    if extra:
        assert transposed["extra_data"]["labelmaps"] == {"transposed": as_stored["extra_data"]["labelmaps"]}
    # the stored maps a transposing student needs are the same runs: nothing is generated twice
    assert transposed.dependencies() == as_stored.dependencies()


def random_maps(count, height, width, seed=0):
    gen = torch.Generator().manual_seed(seed)
    values = (torch.randn(count, TOPK, height, width, generator=gen) * 3).sort(dim=1, descending=True).values
    ids = torch.rand(count, NUM_CLASSES, height, width, generator=gen).argsort(dim=1)[:, :TOPK]
    return values, ids


def test_pooling_transposed_maps_over_a_box_equals_pooling_the_maps_over_the_box_with_x_and_y_swapped(tmp_path):
    values, ids = random_maps(6, 5, 7)  # H != W
    relpaths = [f"train/{WNIDS[0]}/{WNIDS[0]}_{i}.JPEG" for i in range(6)]
    maps = TransposedLabelMaps(open_labelmaps(write_packed(tmp_path / "packed", relpaths, values, ids,
                                                           num_classes=NUM_CLASSES)))
    gen = torch.Generator().manual_seed(1)
    corner = torch.rand(6, 2, generator=gen) * 0.5
    boxes = torch.cat([corner, corner + 0.2 + torch.rand(6, 2, generator=gen) * 0.3], dim=1)  # x1, y1, x2, y2
    swapped = boxes[:, [1, 0, 3, 2]]
    read_values, read_ids = maps.read(np.arange(6))
    assert maps.grid == (7, 5) and read_values.shape == (6, TOPK, 7, 5)
    assert torch.allclose(pool_labels(read_values, read_ids, boxes, NUM_CLASSES),
                          pool_labels(values, ids, swapped, NUM_CLASSES), atol=1e-6)
    # and not the same as pooling the stored maps over the box itself
    assert not torch.allclose(pool_labels(read_values, read_ids, boxes, NUM_CLASSES),
                              pool_labels(values, ids, boxes, NUM_CLASSES), atol=1e-3)


def test_a_student_under_transpose_reads_every_map_transposed_and_label_cleaning_keeps_the_same_images(
        tmp_path):
    root = tmp_path / "images"
    relpaths = [f"train/{wnid}/{wnid}_{i}.JPEG" for wnid in WNIDS[:2] for i in range(3)]
    for relpath in relpaths:
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", SIZES[0]).save(root / relpath)
    # positive values, ids constant over the map: an image's top class is its slot 0, its label on images 0, 2, 4
    values = random_maps(len(relpaths), 5, 7)[0].abs().sort(dim=1, descending=True).values + 1
    labels = [index // 3 for index in range(len(relpaths))]
    ids = torch.stack([((label + index % 2 + torch.arange(TOPK)) % NUM_CLASSES)[:, None, None].expand(TOPK, 5, 7)
                       for index, label in enumerate(labels)])
    official = write_official_maps(tmp_path / "official", relpaths, values, ids)
    cfg = relabel_config(**{"data.source": "imagenet", "data.root": str(root),
                            "labelmap.official_dir": str(official), "labelmap.transpose": True})
    ref = labelmaps_ref(cfg)
    assert ref == {"transposed": official_ref(official)}
    resources = Resources(tmp_path / "runs")
    maps = open_student_labelmaps(ref, resources, NUM_CLASSES)
    stored = open_student_labelmaps(ref["transposed"], resources, NUM_CLASSES)
    rows = np.arange(stored.num_images)
    assert torch.equal(maps.read(rows)[0], stored.read(rows)[0].transpose(2, 3))
    assert torch.equal(maps.read(rows)[1], stored.read(rows)[1].transpose(2, 3))
    # workers receive the maps pickled
    assert torch.equal(pickle.loads(pickle.dumps(maps)).read(rows)[0], maps.read(rows)[0])
    images = image_folder(root, "train", WNIDS)
    assert agreeing_indices(maps, images, NUM_CLASSES).tolist() == [0, 2, 4]
    assert agreeing_indices(stored, images, NUM_CLASSES).tolist() == [0, 2, 4]
