import json
import os
import pickle
import shutil

import numpy as np
import pytest
import timm
import torch
from numpy.lib.format import open_memmap
from PIL import Image
from torch.utils.data import DataLoader

from repro.imagefiles import list_images
from repro.labelmaps import cli as labelmaps_cli
from repro.labelmaps import generate as generate_module
from repro.labelmaps.annotator import LITE0, Annotator, build_annotator
from repro.labelmaps.generate import (annotate_images, commit_progress, generate_labelmaps, generate_share,
                                      image_tensor)
from repro.labelmaps.progress import recorded_seconds
from repro.labelmaps.examples import EXAMPLE_INPUT_SIZE, EXAMPLE_OUTPUT_STRIDE, example_photos
from repro.labelmaps.lite0 import imagenet_class_names
from repro.labelmaps.render import render_label_maps
from repro.labelmaps.analysis import balanced_top1_subsample
from repro.labelmaps.convert import derive_store, official_to_packed, packed_to_official
from repro.labelmaps.errors import LabelMapError
from repro.labelmaps.maps import ConcatLabelMaps, official_key
from repro.labelmaps.official import save_official
from repro.labelmaps.packed import IDS, INDEX, SCALES, VALUES, write_packed
from repro.labelmaps.reader import open_labelmaps
from repro.labelmaps.verification import verify
from repro.models import create_model, save_model
from repro.pooling import global_pool_logits, pool_labels

TINY = {"name": "resnet18", "kwargs": {"channels": [8, 16, 32, 64], "stem_width": 8}}
CLASSES = 6
WNIDS = [f"n90000000{c}" for c in range(3)]
RELPATHS = [f"train/{w}/{w}_{i}.JPEG" for w in WNIDS for i in range(3)]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("annotator") / "annotator.pt"
    save_model(create_model(TINY, CLASSES), TINY, CLASSES, path)
    return path


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    """train/<wnid>/<wnid>_<i>.JPEG, 4 images in each of 3 classes, 40 x 32 (non-square)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for wnid in WNIDS:
        (root / "train" / wnid).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / wnid / f"{wnid}_{i}.JPEG", quality=95)
    return root


def make_maps(count, k=5, height=15, width=15, classes=1000, seed=0, sort=True):
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(count, k, height, width, generator=gen) * 4
    if sort:
        values = values.sort(dim=1, descending=True).values
    ids = torch.rand(count, classes, height, width, generator=gen).argsort(dim=1)[:, :k]
    return values, ids


def write_official(directory, relpaths, values, ids):
    for path, v, i in zip(relpaths, values, ids):
        save_official(directory / f"{official_key(path)}.pt", v, i)
    return directory


def read_all(store):
    return store.read(np.arange(store.num_images))


# ---- the annotator ----

@pytest.mark.parametrize("name,kwargs", [("resnet18", TINY["kwargs"]), ("test_efficientnet", {})])
@pytest.mark.parametrize("output_stride", [8, 32])
def test_dense_logits_average_to_the_classifier_logits(name, kwargs, output_stride):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=CLASSES, output_stride=output_stride, **kwargs)
    annotator = Annotator(model)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    dense = annotator.dense_logits(images)
    assert dense.shape == (2, CLASSES, 64 // output_stride, 64 // output_stride)
    with torch.no_grad():
        logits = model((images - annotator.mean) / annotator.std)
    torch.testing.assert_close(dense.mean(dim=(2, 3)), logits, atol=1e-5, rtol=1e-4)


def test_topk_maps_are_sorted_and_agree_with_the_dense_argmax(tiny_checkpoint):
    annotator = build_annotator(tiny_checkpoint, output_stride=8)
    images = torch.rand(3, 3, 120, 120, generator=torch.Generator().manual_seed(2))
    values, ids = annotator(images, 3)
    assert values.shape == ids.shape == (3, 3, 15, 15)
    assert annotator.grid(120) == (15, 15)
    assert (values[:, :-1] >= values[:, 1:]).all()
    assert torch.equal(ids[:, 0], annotator.dense_logits(images).argmax(dim=1))
    with pytest.raises(ValueError, match="topk"):
        annotator(images, CLASSES + 1)


def test_normalisation_defaults_to_the_pretrained_cfg_and_can_be_overridden():
    model = timm.create_model("resnet18", num_classes=CLASSES, **TINY["kwargs"])
    default = Annotator(model)
    assert default.description["mean"] == list(model.pretrained_cfg["mean"])
    custom = Annotator(model, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert custom.description["std"] == [0.5, 0.5, 0.5]
    images = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(custom.dense_logits(images), default.dense_logits(
        ((images - 0.5) / 0.5) * default.std + default.mean), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,kwargs,message", [
    ("test_convnext", {}, "global average pooling then the linear"),  # normalises the pooled features
    ("test_resnet", {"global_pool": "max"}, "global average pooling then the linear"),
    ("test_vit", {}, "feature map"),
])
def test_annotator_refuses_heads_that_are_not_average_pooled_linear(name, kwargs, message):
    with pytest.raises(TypeError, match=message):
        Annotator(timm.create_model(name, num_classes=CLASSES, **kwargs))


def test_build_annotator_sources(tiny_checkpoint, tmp_path):
    annotator = build_annotator(tiny_checkpoint, output_stride=16)
    assert annotator.description["source"] == "checkpoint" and annotator.num_classes == CLASSES
    assert annotator.grid(64) == (4, 4)
    timm_annotator = build_annotator("test_resnet", output_stride=8, wnids=[f"n{i:08d}" for i in range(CLASSES)])
    assert timm_annotator.description["source"] == "timm" and timm_annotator.description["pretrained"] is False
    assert timm_annotator.num_classes == CLASSES
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        build_annotator(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="no_such_model"):
        build_annotator("no_such_model")


# ---- the offline ImageNet annotator ----

def test_lite0_labels_real_photos():
    names = imagenet_class_names()
    assert len(names) == 1000 and names[967] == "espresso" and names[285] == "Egyptian cat"
    annotator = build_annotator(LITE0, output_stride=EXAMPLE_OUTPUT_STRIDE)
    images = torch.stack([image_tensor(p, EXAMPLE_INPUT_SIZE) for p in example_photos(("chelsea", "coffee"))])
    with torch.no_grad():
        dense = annotator.dense_logits(images)
        logits = annotator.model((images - annotator.mean) / annotator.std)
    # the real weights keep the FC-as-conv identity
    torch.testing.assert_close(dense.mean(dim=(2, 3)), logits, atol=1e-4, rtol=1e-4)
    values, ids = dense.topk(5, dim=1)
    assert values.shape == (2, 5, 15, 15)
    top = global_pool_logits(values, ids, 1000).softmax(dim=1).topk(2).indices.tolist()
    assert set(top[0]) <= set(range(281, 286)), [names[c] for c in top[0]]  # cat classes
    assert top[1][0] in (967, 968), names[top[1][0]]  # espresso or cup


def test_render_label_maps_writes_a_png(tmp_path):
    photos = example_photos(("coffee",)) + [np.zeros((30, 50, 3), dtype=np.uint8)]
    values, ids = make_maps(2, k=3, height=6, width=6, classes=10)
    path = render_label_maps(photos, (values, ids), [f"class {c}" for c in range(10)], tmp_path / "maps.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > image.height / 2
    with pytest.raises(ValueError, match="label maps"):
        render_label_maps(photos, [(values[0], ids[0])], [str(c) for c in range(10)], tmp_path / "bad.png")


# ---- storage ----

def test_official_and_packed_round_trip(tmp_path):
    values, ids = make_maps(len(RELPATHS))
    official = open_labelmaps(write_official(tmp_path / "official", RELPATHS, values, ids))
    assert (official.format, official.topk, official.grid, official.num_images) == ("official", 5, (15, 15), 9)
    read_values, read_ids = official.read(official.rows_for(RELPATHS))
    assert torch.equal(read_values, values) and torch.equal(read_ids, ids)

    packed = open_labelmaps(official_to_packed(tmp_path / "official", tmp_path / "packed"))
    assert packed.format == "packed" and packed.paths == RELPATHS
    assert all(torch.equal(a, b) for a, b in zip(read_all(packed), (values, ids)))
    assert RELPATHS[4] in packed and "train/n900000000/other.JPEG" not in packed
    # an image found by its <wnid>/<stem> key when stored under another split or extension
    assert packed.row_of("images/n900000001/n900000001_1.png") == packed.row_of(RELPATHS[4]) == 4
    with pytest.raises(KeyError, match="other.JPEG"):
        packed.row_of("train/n900000000/other.JPEG")

    back = packed_to_official(tmp_path / "packed", tmp_path / "official2")
    for path in RELPATHS:
        key = official_key(path)
        first = torch.load(tmp_path / "official" / f"{key}.pt", weights_only=True)
        assert torch.equal(first, torch.load(back / f"{key}.pt", weights_only=True))
    transposed = open_labelmaps(official_to_packed(tmp_path / "official", tmp_path / "t", transpose=True))
    assert torch.equal(read_all(transposed)[0], values.transpose(2, 3))


def test_packed_store_from_arrays_and_global_logits(tmp_path):
    values, ids = make_maps(4, k=3, height=5, width=7, classes=20)
    store = open_labelmaps(write_packed(tmp_path / "s", RELPATHS[:4], values.numpy(), ids.numpy(), num_classes=20))
    assert (store.topk, store.grid, store.num_classes, len(store)) == (3, (5, 7), 20, 4)
    torch.testing.assert_close(store.global_logits([2, 0]), global_pool_logits(values[[2, 0]], ids[[2, 0]], 20))
    with pytest.raises(LabelMapError, match="class id 19 >= num_classes 10"):
        write_packed(tmp_path / "bad", RELPATHS[:4], values, ids, num_classes=10)
    with pytest.raises(FileExistsError):
        write_packed(tmp_path / "s", RELPATHS[:4], values, ids, num_classes=20)


def test_a_store_takes_its_disk_space_when_created_and_a_full_disk_is_one_line(tmp_path, monkeypatch):
    """A sparse memory-mapped file that meets a full disk kills the pass by SIGBUS, with no message."""
    import errno

    from repro.labelmaps.packed import PackedWriter

    writer = PackedWriter(tmp_path / "s", 64, 5, (15, 15), "fp32")
    values = tmp_path / "s" / "values.npy"
    assert os.stat(values).st_blocks * 512 >= os.path.getsize(values) > 64 * 5 * 15 * 15 * 4
    del writer

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(LabelMapError, match=r"cannot take 0\.00 GB for .*values.npy: No space left on device; free"):
        PackedWriter(tmp_path / "t", 64, 5, (15, 15), "fp32")


def test_concatenated_stores_read_the_chosen_rows_of_each(tmp_path):
    values, ids = make_maps(9, k=3, height=4, width=4, classes=20)
    first = open_labelmaps(write_packed(tmp_path / "a", RELPATHS[:5], values[:5], ids[:5], num_classes=20))
    extra_paths = [f"extra/x/{i}.JPEG" for i in range(4)]
    second = open_labelmaps(write_packed(tmp_path / "b", extra_paths, values[5:], ids[5:], num_classes=20))
    maps = ConcatLabelMaps([(first, [4, 0]), (second, [3, 1])],
                           [RELPATHS[4], RELPATHS[0], extra_paths[3], extra_paths[1]])
    assert maps.paths == [RELPATHS[4], RELPATHS[0], extra_paths[3], extra_paths[1]]
    assert open_labelmaps(maps) is maps
    read_values, read_ids = maps.read(maps.rows_for([extra_paths[1], RELPATHS[0], extra_paths[3]]))
    torch.testing.assert_close(read_values, torch.stack([values[6], values[0], values[8]]))
    assert torch.equal(read_ids, torch.stack([ids[6], ids[0], ids[8]]))
    restored = pickle.loads(pickle.dumps(maps))
    assert torch.equal(restored.read([2])[1], ids[8][None])
    fp16 = open_labelmaps(derive_store(tmp_path / "b", tmp_path / "b16", dtype="fp16"))
    with pytest.raises(LabelMapError, match="does not match"):
        ConcatLabelMaps([(first, [0]), (fp16, [0])], RELPATHS[:2])


def test_concatenated_released_maps_find_a_training_image_whose_name_a_pool_file_shares(tmp_path):
    # the released store names its rows <wnid>/<stem>; the pool holds a file of the same name (ImageNet-21k keeps
    # ImageNet-1k's file names)
    values, ids = make_maps(4, k=3, height=4, width=4, classes=20)
    released = open_labelmaps(packed_to_official(write_packed(tmp_path / "a", RELPATHS[:3], values[:3], ids[:3],
                                                              num_classes=20), tmp_path / "official"))
    twin = "extra/" + RELPATHS[0].split("/", 1)[1]
    pool = open_labelmaps(write_packed(tmp_path / "pool", [twin], values[3:], ids[3:], num_classes=20))
    train = [RELPATHS[0], RELPATHS[2], twin]
    maps = ConcatLabelMaps([(released, released.rows_for(train[:2])), (pool, [0])], train)
    read_values, _ = maps.read(maps.rows_for(train))
    torch.testing.assert_close(read_values, values[[0, 2, 3]])
    with pytest.raises(LabelMapError, match="2 image paths for 3 rows"):
        ConcatLabelMaps([(released, released.rows_for(train[:2])), (pool, [0])], train[:2])


def test_balanced_subsample_keeps_the_most_confident_images_of_each_top1_class(tmp_path):
    # image i shows class i % 3 with confidence growing with i; class 3 has a single image
    count, grid = 10, 2
    values = np.zeros((count, 1, grid, grid), dtype=np.float32)
    ids = np.zeros((count, 1, grid, grid), dtype=np.int64)
    for i in range(count - 1):
        values[i], ids[i] = 1.0 + i, i % 3
    values[-1], ids[-1] = 1.0, 3
    paths = [f"extra/{i}.JPEG" for i in range(count)]
    maps = open_labelmaps(write_packed(tmp_path / "s", paths, values, ids, num_classes=4))
    rows, top1 = balanced_top1_subsample(maps, per_class=2)
    # class 0: images 0, 3, 6 -> 3 and 6; class 1: 1, 4, 7 -> 4, 7; class 2: 2, 5, 8 -> 5, 8; class 3: image 9
    assert rows.tolist() == [3, 4, 5, 6, 7, 8, 9]
    assert top1.tolist() == [0, 1, 2, 0, 1, 2, 3]


def test_fp16_and_int8_stay_within_their_error_bounds(tmp_path):
    values, ids = make_maps(8, seed=1)
    values[3] = 2.5  # a constant map: the 8-bit code must still decode exactly
    full = write_packed(tmp_path / "fp32", [f"train/n9/{i}.JPEG" for i in range(8)], values, ids)
    half = open_labelmaps(derive_store(full, tmp_path / "fp16", dtype="fp16"))
    byte = open_labelmaps(derive_store(full, tmp_path / "int8", dtype="int8"))
    half_values, half_ids = read_all(half)
    byte_values, byte_ids = read_all(byte)
    assert torch.equal(half_ids, ids) and torch.equal(byte_ids, ids)
    assert ((half_values - values).abs() <= values.abs() * 2 ** -11 + 1e-7).all()
    spread = values.flatten(1).max(dim=1).values - values.flatten(1).min(dim=1).values
    bound = spread / 255 / 2 + 1e-5
    assert ((byte_values - values).abs().flatten(1).max(dim=1).values <= bound).all()
    assert torch.equal(byte_values[3], values[3])
    assert [open_labelmaps(full).bytes_per_image, half.bytes_per_image, byte.bytes_per_image] == [6750, 4500, 3383]
    boxes = torch.tensor([[0.1, 0.2, 0.7, 0.9]]).expand(8, 4)
    torch.testing.assert_close(pool_labels(byte_values, byte_ids, boxes, 1000), pool_labels(values, ids, boxes, 1000),
                               atol=2e-2, rtol=0)


@pytest.mark.parametrize("topk", [1, 3, 5, 10])
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8"])
def test_table6_variants_derive_from_one_full_store(tmp_path, topk, dtype):
    values, ids = make_maps(3, k=10, seed=2)
    full = write_packed(tmp_path / "full", RELPATHS[:3], values, ids)
    derived = open_labelmaps(derive_store(full, tmp_path / f"k{topk}_{dtype}", topk=topk, dtype=dtype))
    assert (derived.topk, derived.dtype) == (topk, dtype)
    assert derived.settings["derived_from"]["topk"] == 10
    derived_values, derived_ids = read_all(derived)
    assert torch.equal(derived_ids, ids[:, :topk])
    tolerance = {"fp32": 0.0, "fp16": 0.01, "int8": 0.2}[dtype]
    torch.testing.assert_close(derived_values, values[:, :topk], atol=tolerance, rtol=0)
    assert derived.bytes_per_image == topk * 225 * ({"fp32": 4, "fp16": 2, "int8": 1}[dtype] + 2) + (
        8 if dtype == "int8" else 0)


def test_topk_reduction_sorts_unsorted_sources_and_refuses_larger_k(tmp_path):
    values, ids = make_maps(3, k=5, seed=3, sort=False)
    official = write_official(tmp_path / "official", RELPATHS[:3], values, ids)
    top1_values, top1_ids = read_all(open_labelmaps(official_to_packed(official, tmp_path / "top1", topk=1)))
    best = values.argmax(dim=1, keepdim=True)
    assert torch.equal(top1_values, values.gather(1, best)) and torch.equal(top1_ids, ids.gather(1, best))
    with pytest.raises(LabelMapError, match="topk must be in 1..1"):
        derive_store(tmp_path / "top1", tmp_path / "more", topk=2)
    with pytest.raises(LabelMapError, match="dtype 'int4'"):
        derive_store(tmp_path / "top1", tmp_path / "int4", dtype="int4")


def test_store_pickles_without_its_memory_maps_and_reopens_in_workers(tmp_path):
    values, ids = make_maps(6, seed=4)
    store = open_labelmaps(write_packed(tmp_path / "s", RELPATHS[:6], values, ids, dtype="int8"))
    expected = store.read([4, 1])
    assert store.arrays() is not None and RELPATHS[0] in store
    clone = pickle.loads(pickle.dumps(store))
    assert clone._arrays is None and clone._paths is None and clone._lookup is None
    assert all(torch.equal(a, b) for a, b in zip(clone.read([4, 1]), expected))
    assert clone.row_of(RELPATHS[5]) == 5
    loader = DataLoader(list(range(6)), batch_size=3, num_workers=1, collate_fn=lambda rows: store.read(rows))
    batches = list(loader)
    assert torch.equal(torch.cat([b[0] for b in batches]), read_all(store)[0])


# ---- verification ----

def corrupted_copy(source, target, corrupt):
    shutil.copytree(source, target)
    corrupt(target)
    return target


def write_into(name, index, value):
    def corrupt(directory):
        array = open_memmap(directory / name, mode="r+")
        array[index] = value
        array.flush()
    return corrupt


def truncate(name):
    def corrupt(directory):
        data = (directory / name).read_bytes()
        (directory / name).write_bytes(data[:len(data) // 2])
    return corrupt


def drop_a_path(directory):
    index = json.loads((directory / INDEX).read_text())
    index["paths"] = index["paths"][:-1]
    (directory / INDEX).write_text(json.dumps(index))


def repeat_a_class(directory):
    ids = open_memmap(directory / IDS, mode="r+")
    ids[1, 1, 0, 0] = ids[1, 0, 0, 0]
    ids.flush()


@pytest.mark.parametrize("corrupt,message", [
    (write_into(VALUES, (3, 0, 0, 0), np.nan), "n900000001_0.JPEG (row 3): non-finite"),
    (write_into(IDS, (2, 1, 4, 4), 1000), "row 2): class id >= 1000"),
    (repeat_a_class, "row 1): a class repeated"),
    (truncate(IDS), "ids.npy"),
    (drop_a_path, "8 paths for 9 images"),
])
def test_verify_catches_a_corrupted_packed_store(tmp_path, corrupt, message):
    values, ids = make_maps(len(RELPATHS), seed=5)
    good = write_packed(tmp_path / "good", RELPATHS, values, ids)
    report = verify(good)
    assert report["ok"] and report["problems"] == [] and report["bytes_per_image"] == 6750
    bad = corrupted_copy(good, tmp_path / "bad", corrupt)
    with pytest.raises(LabelMapError, match=message.replace("(", r"\(").replace(")", r"\)")):
        verify(bad)
    assert not verify(bad, raise_on_failure=False)["ok"]


def test_verify_catches_bad_scales_coverage_and_broken_official_files(tmp_path, image_root):
    values, ids = make_maps(len(RELPATHS), classes=CLASSES, seed=6)
    good = write_packed(tmp_path / "int8", RELPATHS, values, ids, num_classes=CLASSES, dtype="int8")
    with pytest.raises(LabelMapError, match="bad quantisation scale"):
        verify(corrupted_copy(good, tmp_path / "scale", write_into(SCALES, (0, 0), 0.0)))
    # the folder has 4 images per class, the store 3
    report = verify(good, image_root=image_root, raise_on_failure=False)
    assert (report["images"], report["missing"], report["extra"]) == (12, 3, 0)
    assert "no label map for image train/n900000000/n900000000_3.JPEG" in report["problems"]

    official = write_official(tmp_path / "official", RELPATHS, values, ids)
    assert verify(official, num_classes=CLASSES)["ok"]
    (official / f"{official_key(RELPATHS[2])}.pt").write_bytes(b"not a tensor")
    torch.save(torch.stack([values[5], ids[5].float() + 0.5]), official / f"{official_key(RELPATHS[5])}.pt")
    report = verify(official, num_classes=CLASSES, raise_on_failure=False)
    assert any("cannot read label map" in p and "n900000000_2.pt" in p for p in report["problems"])
    assert any("not whole numbers" in p and "n900000001_2.pt" in p for p in report["problems"])
    with pytest.raises(LabelMapError, match="class id >= 3"):
        verify(write_official(tmp_path / "o2", RELPATHS, values, ids), num_classes=3)


@pytest.mark.parametrize("corrupt,message", [
    (write_into(VALUES, (3, 0, 0, 0), np.inf), r"label map of train/n900000001/n900000001_0.JPEG \(row 3 of"),
    (write_into(IDS, (2, 1, 4, 4), 999), r"n900000000_2.JPEG \(row 2 of .*class id 999 outside 0..5"),
])
def test_a_packed_store_checks_every_map_it_reads(tmp_path, corrupt, message):
    values, ids = make_maps(len(RELPATHS), classes=CLASSES, seed=5)
    bad = corrupted_copy(write_packed(tmp_path / "good", RELPATHS, values, ids, num_classes=CLASSES),
                         tmp_path / "bad", corrupt)
    store = open_labelmaps(bad)
    store.read([0, 1])  # the good rows read as before
    with pytest.raises(LabelMapError, match=message):
        store.read([0, 2, 3])


def test_a_packed_store_checks_its_arrays_against_the_index_when_opened(tmp_path):
    values, ids = make_maps(len(RELPATHS), seed=5)
    store = write_packed(tmp_path / "maps", RELPATHS, values, ids)
    np.save(store / IDS, np.zeros((len(RELPATHS), 4, 15, 15), dtype=np.uint16))
    with pytest.raises(LabelMapError, match=r"ids.npy: \(9, 4, 15, 15\) uint16, expected \(9, 5, 15, 15\)"):
        open_labelmaps(store).read([0])


def test_the_official_shape_is_what_most_files_agree_on_not_the_first_file(tmp_path):
    values, ids = make_maps(len(RELPATHS), classes=CLASSES, seed=7)
    official = write_official(tmp_path / "official", RELPATHS, values, ids)
    first = official / f"{official_key(RELPATHS[0])}.pt"
    torch.save(torch.stack([values[0, :3], ids[0, :3].float()]), first)  # damaged: 3 classes per cell
    store = open_labelmaps(official, CLASSES)
    assert (store.topk, store.grid) == (5, (15, 15))
    assert torch.equal(store.read([4])[0], values[4:5])  # a good file reads
    with pytest.raises(LabelMapError, match=r"n900000000_0.pt is \(3, 15, 15\), expected \(5, 15, 15\)"):
        store.read([0])
    problems = verify(official, num_classes=CLASSES, raise_on_failure=False)["problems"]
    assert len(problems) == 1 and "n900000000_0.pt" in problems[0]  # the 8 good files are not blamed
    nan = values[6].clone()
    nan[0, 3, 3] = float("nan")
    save_official(official / f"{official_key(RELPATHS[6])}.pt", nan, ids[6])
    with pytest.raises(LabelMapError, match="n900000002_0.pt has non-finite values"):
        store.read([5, 6])


# ---- generation ----

GENERATE = {"input_size": 64, "topk": 3, "batch_size": 2, "progress": False}


def test_generation_writes_the_annotators_maps(tmp_path, image_root, tiny_checkpoint):
    annotator = build_annotator(tiny_checkpoint, output_stride=8)
    relpaths = list_images(image_root, "train")
    assert len(relpaths) == 12 and relpaths[0] == "train/n900000000/n900000000_0.JPEG"
    store = open_labelmaps(generate_labelmaps(annotator, relpaths, image_root, tmp_path / "store", **GENERATE))
    assert (store.paths, store.topk, store.grid, store.dtype, store.num_classes) == (relpaths, 3, (8, 8), "fp32",
                                                                                     CLASSES)
    assert store.settings["annotator"]["source"] == "checkpoint" and store.settings["input_size"] == 64
    photos = [Image.open(image_root / p) for p in relpaths]
    direct_values, direct_ids = annotate_images(annotator, photos, 64, 3)
    stored_values, stored_ids = read_all(store)
    torch.testing.assert_close(stored_values, direct_values, atol=1e-5, rtol=1e-5)
    assert torch.equal(stored_ids, direct_ids)
    assert verify(store.path, image_root=image_root)["missing"] == 0
    with pytest.raises(FileExistsError):
        generate_labelmaps(annotator, relpaths, image_root, tmp_path / "store", **GENERATE)


@pytest.mark.parametrize("dtype", ["int8", "compact"])
def test_interrupted_generation_resumes_to_identical_output(tmp_path, image_root, tiny_checkpoint, monkeypatch,
                                                            dtype):
    annotator = build_annotator(tiny_checkpoint, output_stride=8)
    relpaths = list_images(image_root, "train")
    settings = {**GENERATE, "dtype": dtype}
    reference = generate_labelmaps(annotator, relpaths, image_root, tmp_path / "reference", **settings)

    def killed_after_first_chunk(partial, run_settings, done, seconds=None):
        commit_progress(partial, run_settings, done, seconds)
        if done > 0:
            raise RuntimeError("killed")

    monkeypatch.setattr(generate_module, "commit_progress", killed_after_first_chunk)
    monkeypatch.setattr(generate_module, "PROGRESS_IMAGES", 4)  # progress recorded every 2 batches
    with pytest.raises(RuntimeError, match="killed"):
        generate_labelmaps(annotator, relpaths, image_root, tmp_path / "run", **settings)
    monkeypatch.undo()
    partial = tmp_path / "run.partial"
    assert not (tmp_path / "run").exists()
    assert json.loads((partial / "progress.json").read_text())["done"] == 4
    with pytest.raises(LabelMapError, match="other settings"):
        generate_labelmaps(annotator, relpaths, image_root, tmp_path / "run", **{**settings, "topk": 2})

    loaded = []
    original = generate_module.ImageFiles.__getitem__
    monkeypatch.setattr(generate_module.ImageFiles, "__getitem__",
                        lambda self, index: loaded.append(self.relpaths[index]) or original(self, index))
    resumed = generate_labelmaps(annotator, relpaths, image_root, tmp_path / "run", **settings)
    assert loaded == relpaths[4:]
    assert not partial.exists()
    names = sorted(p.name for p in reference.iterdir())
    assert names == sorted(p.name for p in resumed.iterdir()) and len(names) == 4
    for name in set(names) - {INDEX}:
        assert (reference / name).read_bytes() == (resumed / name).read_bytes(), name
    assert json.loads((reference / INDEX).read_text())["paths"] == json.loads((resumed / INDEX).read_text())["paths"]


def test_a_second_generation_of_the_same_output_is_refused_naming_the_first(tmp_path, image_root,
                                                                           tiny_checkpoint):
    annotator = build_annotator(tiny_checkpoint, output_stride=8)
    with generate_module.output_lock(tmp_path / "store"):
        with pytest.raises(LabelMapError, match=f"store is being generated by process {os.getpid()} on .* wait"):
            generate_labelmaps(annotator, list_images(image_root, "train"), image_root, tmp_path / "store",
                               **GENERATE)
    generate_labelmaps(annotator, list_images(image_root, "train"), image_root, tmp_path / "store", **GENERATE)


def test_official_format_generation_and_resume(tmp_path, image_root, tiny_checkpoint):
    annotator = build_annotator(tiny_checkpoint, output_stride=8)
    relpaths = list_images(image_root, "train")
    packed = open_labelmaps(generate_labelmaps(annotator, relpaths, image_root, tmp_path / "packed", **GENERATE))
    out = generate_labelmaps(annotator, relpaths, image_root, tmp_path / "official", fmt="official", **GENERATE)
    (out / f"{official_key(relpaths[5])}.pt").unlink()
    generate_labelmaps(annotator, relpaths, image_root, tmp_path / "official", fmt="official", **GENERATE)
    official = open_labelmaps(out)
    assert official.format == "official" and official.num_classes == CLASSES
    for a, b in zip(official.read(official.rows_for(relpaths)), read_all(packed)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(LabelMapError, match="fp32"):
        generate_labelmaps(annotator, relpaths, image_root, tmp_path / "o16", fmt="official",
                           **{**GENERATE, "dtype": "fp16"})


def test_a_resumed_generation_is_timed_over_all_its_sessions(tmp_path, image_root, tiny_checkpoint, monkeypatch):
    annotator = build_annotator(tiny_checkpoint, output_stride=8)
    relpaths = list_images(image_root, "train")
    monkeypatch.setattr(generate_module, "PROGRESS_IMAGES", 1)  # progress recorded after every batch
    commit = generate_module.commit_progress

    def killed_at(rows):
        def commit_then_kill(partial, run_settings, done, seconds=None):
            commit(partial, run_settings, done, seconds)
            if done >= rows:
                raise RuntimeError("killed")
        return commit_then_kill

    monkeypatch.setattr(generate_module, "commit_progress", killed_at(4))
    with pytest.raises(RuntimeError, match="killed"):
        generate_labelmaps(annotator, relpaths, image_root, tmp_path / "run", **GENERATE)
    partial = tmp_path / "run.partial"
    state = json.loads((partial / "progress.json").read_text())
    assert state["done"] == 4 and 0 <= state["seconds"] == recorded_seconds(partial)
    (partial / "progress.json").write_text(json.dumps({**state, "seconds": 1000.0}))  # a long first session
    monkeypatch.setattr(generate_module, "commit_progress", killed_at(8))
    with pytest.raises(RuntimeError, match="killed"):
        generate_labelmaps(annotator, relpaths, image_root, tmp_path / "run", **GENERATE)
    assert 1000.0 <= recorded_seconds(partial) < 1100.0  # the first session's time carried on
    assert recorded_seconds(tmp_path / "nothing.partial") == 0.0
    monkeypatch.setattr(generate_module, "commit_progress", commit)
    store = open_labelmaps(generate_labelmaps(annotator, relpaths, image_root, tmp_path / "run", **GENERATE))
    assert 1000.0 <= store.settings["seconds"] < 1100.0  # the finished store holds the time of all three sessions


def test_a_finished_store_is_kept_by_a_rerun_of_the_same_pass(tmp_path, image_root, tiny_checkpoint, monkeypatch):
    """A job stopped after the pass but before its run was recorded: the rerun's overwrite made the pass again
    (hours for ImageNet's 1.28M images, tens for an extra pool)."""
    annotator = build_annotator(tiny_checkpoint, output_stride=8)
    relpaths = list_images(image_root, "train")
    store = generate_labelmaps(annotator, relpaths, image_root, tmp_path / "store", **GENERATE)
    written = (store / "values.npy").stat().st_mtime_ns
    annotated = []
    batches = generate_module._annotated_batches
    monkeypatch.setattr(generate_module, "_annotated_batches", lambda *a: annotated.append(1) or batches(*a))
    again = dict(overwrite=True, keep_finished=True, **GENERATE)
    assert generate_labelmaps(annotator, relpaths, image_root, store, **again) == store and not annotated
    assert (store / "values.npy").stat().st_mtime_ns == written
    generate_labelmaps(annotator, relpaths, image_root, store, **{**again, "topk": 2})  # other settings: made again
    assert annotated and open_labelmaps(store).topk == 2
    annotated.clear()
    index = json.loads((store / INDEX).read_text())
    (store / INDEX).write_text(json.dumps({key: value for key, value in index.items() if key != "seconds"}))
    generate_labelmaps(annotator, relpaths, image_root, store, **{**again, "topk": 2})
    assert annotated  # a store of the former code, which did not record its pass's time: made again, and timed
    annotated.clear()
    generate_labelmaps(annotator, relpaths, image_root, store, **{**again, "keep_finished": False, "topk": 2})
    assert annotated  # overwrite alone makes it again, as `relabel --overwrite` asks


@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_a_pass_split_over_ranks_joins_into_the_one_process_store(tmp_path, image_root, tiny_checkpoint, dtype):
    """Under torchrun each rank annotates its share; rank 0 joins them after the last (here the ranks run one
    after another: rank 0 finds the others' shares finished). One image per batch, so that the shares' batches
    are the one-process pass's and the bytes must be equal."""
    annotator = build_annotator(tiny_checkpoint, output_stride=8)
    relpaths = list_images(image_root, "train")
    settings = {**GENERATE, "dtype": dtype, "batch_size": 1}
    reference = generate_labelmaps(annotator, relpaths, image_root, tmp_path / "reference", **settings)
    out = tmp_path / "split" / "store"
    for rank in (2, 1):
        assert generate_share(annotator, relpaths, image_root, out, rank, 3, **settings) is None
        assert not out.exists()
    shares = sorted(path.name for path in (tmp_path / "split" / "store.shares-3").iterdir() if path.is_dir())
    assert shares == ["1", "2"]
    assert generate_share(annotator, relpaths, image_root, out, 0, 3, **settings) == out
    assert not (tmp_path / "split" / "store.shares-3").exists()
    for name in (VALUES, IDS, *([SCALES] if dtype == "int8" else [])):
        assert (reference / name).read_bytes() == (out / name).read_bytes(), name
    joined, alone = (json.loads((store / INDEX).read_text()) for store in (out, reference))
    assert joined["paths"] == relpaths and joined["shares"] == 3 and joined["seconds"] > 0
    assert {k: v for k, v in joined.items() if k not in ("seconds", "shares")} == \
        {k: v for k, v in alone.items() if k != "seconds"}
    # a rerun (a job requeued after the join, before its run was recorded) keeps it, on every rank
    written = (out / VALUES).stat().st_mtime_ns
    assert generate_share(annotator, relpaths, image_root, out, 1, 3, **settings) is None
    assert not (tmp_path / "split" / "store.shares-3").exists()  # its joined share is not made again
    assert generate_share(annotator, relpaths, image_root, out, 0, 3, **settings) == out
    assert (out / VALUES).stat().st_mtime_ns == written


def test_rank_zero_waits_for_every_share_and_refuses_one_of_other_images(tmp_path, image_root, tiny_checkpoint,
                                                                         monkeypatch):
    annotator = build_annotator(tiny_checkpoint, output_stride=8)
    relpaths = list_images(image_root, "train")
    out = tmp_path / "store"
    # a share left by an attempt over other images (one image fewer): rank 0 must not join it
    generate_share(annotator, relpaths[:-1], image_root, out, 1, 2, **GENERATE)
    waited = []

    def rank_one_finishes_meanwhile(seconds):
        waited.append(seconds)
        generate_share(annotator, relpaths, image_root, out, 1, 2, **GENERATE)

    monkeypatch.setattr(generate_module.time, "sleep", rank_one_finishes_meanwhile)
    generate_share(annotator, relpaths, image_root, out, 0, 2, **GENERATE)
    assert waited and open_labelmaps(out).paths == relpaths
    # a rank that never delivers (it died on another node): rank 0 stops, naming it, once nothing moves
    monkeypatch.setattr(generate_module.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(generate_module, "SHARE_STALL_SECONDS", 0.0)
    with pytest.raises(LabelMapError, match=r"shares of rank 1 \(0 of its images\) have not moved .* rerun the job"):
        generate_share(annotator, relpaths, image_root, tmp_path / "stalled", 0, 2, **GENERATE)


@pytest.mark.parametrize("workers", [0, 1])
def test_generation_names_an_unreadable_image_and_resumes_once_it_is_replaced(tmp_path, image_root, tiny_checkpoint,
                                                                              monkeypatch, workers):
    root = tmp_path / "root"
    shutil.copytree(image_root, root)
    damaged = root / "train" / WNIDS[1] / f"{WNIDS[1]}_2.JPEG"  # the 7th of 12 images
    readable = damaged.read_bytes()
    damaged.write_bytes(b"not an image")
    annotator = build_annotator(tiny_checkpoint, output_stride=8)
    settings = {**GENERATE, "workers": workers}
    monkeypatch.setattr(generate_module, "PROGRESS_IMAGES", 1)  # progress recorded after every batch
    with pytest.raises(LabelMapError) as caught:
        generate_labelmaps(annotator, list_images(root, "train"), root, tmp_path / "out", **settings)
    message = str(caught.value)  # one line, not inside a loader worker's traceback
    assert "\n" not in message and message.startswith(f"cannot read image {damaged}: ")
    assert message.endswith(generate_module.UNREADABLE_ADVICE)
    assert json.loads((tmp_path / "out.partial" / "progress.json").read_text())["done"] == 6
    damaged.unlink()  # what the advice says not to do
    with pytest.raises(LabelMapError, match="out.partial holds an interrupted generation of another image list"):
        generate_labelmaps(annotator, list_images(root, "train"), root, tmp_path / "out", **settings)
    damaged.write_bytes(readable)  # what it says to do: the pass resumes and ends as an uninterrupted one
    resumed = open_labelmaps(generate_labelmaps(annotator, list_images(root, "train"), root, tmp_path / "out",
                                                **settings))
    reference = open_labelmaps(generate_labelmaps(annotator, list_images(image_root, "train"), image_root,
                                                  tmp_path / "reference", **GENERATE))
    for a, b in zip(read_all(resumed), read_all(reference)):
        assert torch.equal(a, b)


def test_skipped_unreadable_images_get_blank_maps_that_no_analysis_counts(tmp_path, image_root, tiny_checkpoint,
                                                                          monkeypatch):
    """data.skip_unreadable: the students skip such images, so the pass must not stop at one (a pool of millions
    of web images stopped at each); the blank map is listed, kept through a resume, a split and a derived store."""
    root = tmp_path / "root"
    shutil.copytree(image_root, root)
    damaged = root / "train" / WNIDS[1] / f"{WNIDS[1]}_2.JPEG"  # row 6 of 12
    damaged.write_bytes(b"not an image")
    relpaths = list_images(root, "train")
    annotator = build_annotator(tiny_checkpoint, output_stride=8)
    skipping = {**GENERATE, "skip_unreadable": True}
    reference = open_labelmaps(generate_labelmaps(annotator, relpaths, image_root, tmp_path / "reference",
                                                  **GENERATE))

    def killed_after(partial, run_settings, done, seconds=None):
        commit_progress(partial, run_settings, done, seconds)
        if done >= 8:  # past the unreadable image
            raise RuntimeError("killed")

    monkeypatch.setattr(generate_module, "commit_progress", killed_after)
    monkeypatch.setattr(generate_module, "PROGRESS_IMAGES", 1)
    with pytest.raises(RuntimeError, match="killed"):
        generate_labelmaps(annotator, relpaths, root, tmp_path / "out", **skipping)
    monkeypatch.undo()
    store = open_labelmaps(generate_labelmaps(annotator, relpaths, root, tmp_path / "out", **skipping))
    assert store.skipped_rows.tolist() == [6]
    assert store.settings["skipped"][0][1].startswith(f"cannot read image {damaged}")
    values, ids = read_all(store)
    reference_values, reference_ids = read_all(reference)
    assert not values[6].any() and not ids[6].any()
    keep = [row for row in range(12) if row != 6]
    assert torch.equal(values[keep], reference_values[keep]) and torch.equal(ids[keep], reference_ids[keep])
    top1, confidence = store.whole_image_top1()
    assert top1[6] == -1 and confidence[6] == 0 and (top1[keep] >= 0).all()
    rows, classes = balanced_top1_subsample(store, per_class=12)
    assert 6 not in rows.tolist() and len(rows) == 11 and (classes >= 0).all()
    assert verify(store.path, image_root=root)["ok"]  # blank by design, not damaged
    for dtype in ("fp16", "int8"):
        derived = open_labelmaps(derive_store(store.path, tmp_path / f"top2_{dtype}", topk=2, dtype=dtype))
        assert derived.skipped_rows.tolist() == [6] and not read_all(derived)[0][6].any()
    # a student reading the image (now readable: a transient error, or replaced) must not learn the blank map
    from repro.data.datasets import TrainCrops
    from repro.data.folders import ImageList
    from repro.data.transforms import TrainCrop

    crops = TrainCrops(ImageList(image_root, tuple(relpaths), np.arange(12) // 4), TrainCrop(32), 0, store.path)
    samples = crops.__getitems__([(0, 5), (0, 6)])
    assert "labelmap_values" in samples[0] and "blank label map" in samples[1]["unreadable"]
    concatenated = ConcatLabelMaps([(reference, [0, 1]), (store, [5, 6, 7])], relpaths[:5])
    assert concatenated.skipped_rows.tolist() == [3]
    # split over 2 ranks: row 6 is the second share's first, and the joined store numbers it 6 again
    split = tmp_path / "split" / "store"
    assert generate_share(annotator, relpaths, root, split, 1, 2, **skipping) is None
    joined = open_labelmaps(generate_share(annotator, relpaths, root, split, 0, 2, **skipping))
    assert joined.skipped_rows.tolist() == [6]
    monkeypatch.setattr(generate_module, "PROGRESS_IMAGES", 1)
    with pytest.raises(LabelMapError, match="data.skip_unreadable=true"):  # without it the pass stops, naming it
        generate_labelmaps(annotator, relpaths, root, tmp_path / "stops", **{**GENERATE, "batch_size": 1})
    # that stopped pass (as one begun before skipping existed) resumes when skipping is turned on
    loaded = []
    original = generate_module.ImageFiles.__getitem__
    monkeypatch.setattr(generate_module.ImageFiles, "__getitem__",
                        lambda self, index: loaded.append(self.relpaths[index]) or original(self, index))
    resumed = open_labelmaps(generate_labelmaps(annotator, relpaths, root, tmp_path / "stops",
                                                **{**skipping, "batch_size": 1}))
    assert loaded == relpaths[6:] and resumed.skipped_rows.tolist() == [6]


# ---- commands ----

def test_commands_relabel_info_verify_convert(tmp_path, image_root, tiny_checkpoint, capsys):
    store = tmp_path / "store"
    assert labelmaps_cli.main(["relabel", "--annotator", str(tiny_checkpoint), "--data", str(image_root),
                               "--out", str(store), "--input-size", "64", "--output-stride", "8", "--topk", "3",
                               "--batch-size", "4", "--limit", "5"]) == 0
    assert open_labelmaps(store).num_images == 5
    assert labelmaps_cli.main(["labelmaps", "info", str(store)]) == 0
    assert "bytes_per_image: 1152" in capsys.readouterr().out
    assert labelmaps_cli.main(["labelmaps", "verify", str(store)]) == 0
    assert labelmaps_cli.main(["labelmaps", "verify", str(store), "--data", str(image_root)]) == 1
    assert "no label map for image" in capsys.readouterr().err
    assert labelmaps_cli.main(["labelmaps", "convert", str(store), str(tmp_path / "official")]) == 0
    assert open_labelmaps(tmp_path / "official").format == "official"
    assert labelmaps_cli.main(["labelmaps", "convert", str(tmp_path / "official"), str(tmp_path / "int8"),
                               "--dtype", "int8", "--num-classes", str(CLASSES)]) == 0
    assert labelmaps_cli.main(["labelmaps", "convert", str(store), str(tmp_path / "top1"), "--to", "packed",
                               "--topk", "1"]) == 0
    assert (open_labelmaps(tmp_path / "int8").dtype, open_labelmaps(tmp_path / "top1").topk) == ("int8", 1)


def test_commands_report_bad_input_in_one_line(tmp_path, image_root, tiny_checkpoint, capsys):
    cases = [
        (["relabel", "--annotator", "resnet18", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")],
         "nowhere/train"),
        (["relabel", "--annotator", str(tmp_path / "absent.pt"), "--data", str(image_root),
          "--out", str(tmp_path / "o")], "absent.pt"),
        # a timm name alone would label with random weights
        (["relabel", "--annotator", "resnet18", "--data", str(image_root), "--out", str(tmp_path / "o")],
         "resnet18 is a timm model name without weights: add --pretrained"),
        (["relabel", "--annotator", "hf-hub:timm/resnet18.a1_in1k", "--data", str(image_root), "--out",
          str(tmp_path / "o")], "is a timm model name without weights"),
        (["labelmaps", "info", str(tmp_path)], "no label maps in"),
        (["labelmaps", "verify", str(tmp_path / "none")], "no label-map directory"),
    ]
    for argv, message in cases:
        assert labelmaps_cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
