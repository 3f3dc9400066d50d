"""Loaders: class folders, ImageNetV2's integer folders, ReaL-format label sets, training crops and their boxes."""
import json
import shutil

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F
from torch.utils.data import DataLoader

from repro.crops import crop_rng, sample_rrc_boxes
from repro.data import (EpochSampler, EvalView, TrainCrop, TrainCrops, image_folder, integer_folder, normalize,
                        open_imagenet, read_classes, read_image, read_label_sets, timm_real_json,
                        unlabelled_folder)
from repro.data.transforms import INTERPOLATION
from repro.imagefiles import list_images
from tests.fixtures import HEIGHT, NUM_CLASSES, WIDTH


def test_classes_come_from_the_synset_mapping_in_sorted_order(imagenet):
    wnids, names = read_classes(imagenet.root)
    assert wnids == sorted(wnids) == imagenet.wnids
    assert names[3] == "class 3, thing"


def test_a_hidden_folder_is_never_a_class_nor_read_for_images(imagenet, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(imagenet.root / "train", root / "train")  # no synset mapping: the classes are the folders
    checkpoints = root / "train" / ".ipynb_checkpoints"  # sorts before every wnid: it would be class 0
    checkpoints.mkdir()
    shutil.copy(image_folder(imagenet.root, "train", imagenet.wnids).path(0), checkpoints / "x.JPEG")
    assert read_classes(root)[0] == imagenet.wnids
    assert len(image_folder(root, "train", imagenet.wnids)) == 4 * NUM_CLASSES
    assert not any("ipynb" in path for path in list_images(root, "train"))


def test_image_folder_labels_by_wnid_and_unions_splits(imagenet):
    train = image_folder(imagenet.root, "train", imagenet.wnids)
    both = image_folder(imagenet.root, ("extra", "train"), imagenet.wnids)
    assert len(train) == 4 * NUM_CLASSES and len(both) == 6 * NUM_CLASSES
    assert both.relpaths[:2 * NUM_CLASSES][0].startswith("extra/") and both.relpaths[-1].startswith("train/")
    for relpath, label in zip(both.relpaths, both.labels):
        assert relpath.split("/")[1] == imagenet.wnids[label]
    assert both.path(0).exists()


def test_an_unlabelled_pool_lists_every_image_at_any_depth(imagenet, tmp_path):
    root = tmp_path / "root"
    (root / "pool" / "a" / "b").mkdir(parents=True)
    (root / "pool" / "a" / "b" / "x.JPEG").write_bytes(b"")
    (root / "pool" / "notes.txt").write_text("not an image")
    (root / "pool" / "linked").symlink_to(imagenet.root / "extra", target_is_directory=True)
    pool = unlabelled_folder(root, "pool")
    assert len(pool) == 1 + 2 * NUM_CLASSES and (pool.labels == -1).all()
    assert list(pool.relpaths) == sorted(pool.relpaths) and pool.relpaths[0] == "pool/a/b/x.JPEG"
    assert pool.path(len(pool) - 1).exists()
    with pytest.raises(FileNotFoundError, match="no image pool folder .*missing"):
        unlabelled_folder(root, "missing")


def test_imagenet_v2_folders_are_read_as_integers(imagenet):
    images = integer_folder(imagenet.root / "v2" / "imagenetv2-top-images-format-val", NUM_CLASSES)
    assert len(images) == NUM_CLASSES
    for relpath, label in zip(images.relpaths, images.labels):
        assert relpath.split("/")[0] == str(label)  # folder "10" is class 10, not the 3rd in string order
    assert list(images.labels) == list(range(NUM_CLASSES))


def test_label_sets_are_matched_by_val_number(imagenet):
    val = image_folder(imagenet.root, "val", imagenet.wnids)
    sets = read_label_sets(imagenet.root / "real.json", val)
    for relpath, label, label_set in zip(val.relpaths, val.labels, sets):
        number = int(relpath[-13:-5])
        assert label_set == imagenet.real[number - 1]
        assert imagenet.val_labels[number - 1] == label
    # timm ships the official file: 50,000 entries, so any ILSVRC val number up to 50,000 resolves
    assert len(json.loads(timm_real_json().read_text())) == 50000
    assert len(read_label_sets(timm_real_json(), val)) == len(val)


def test_open_imagenet_finds_every_eval_set(imagenet):
    data = open_imagenet(imagenet.root, {"source": "world"}, ("extra", "train"))
    names = [s.name for s in data.eval_sets]
    assert names == ["imagenet", "imagenetv2_top_images", "imagenetv2_matched_frequency", "imagenetv2_threshold_0.7"]
    assert set(data.eval_sets[0].label_sets) == {"real", "shankar"}
    assert data.num_classes == NUM_CLASSES and len(data.train) == 6 * NUM_CLASSES
    assert data.val is data.eval_sets[0].images


def test_train_crop_is_the_sampled_box_and_repeats_for_the_same_key(imagenet):
    images = image_folder(imagenet.root, "train", imagenet.wnids)
    plain = TrainCrops(images, TrainCrop(24, hflip=0.0, color_jitter=0.0), seed=3)
    sample = plain[(2, 5)]
    x1, y1, x2, y2 = sample_rrc_boxes(WIDTH, HEIGHT, 1, crop_rng(3, 2, 5))[0]
    assert torch.allclose(sample["box"], torch.tensor([x1 / WIDTH, y1 / HEIGHT, x2 / WIDTH, y2 / HEIGHT],
                                                            dtype=torch.float32))
    assert (sample["box"] >= 0).all() and (sample["box"] <= 1).all()
    expected = F.resized_crop(read_image(images.path(5)), int(y1), int(x1), int(y2 - y1), int(x2 - x1), [24, 24],
                              interpolation=INTERPOLATION, antialias=True)
    assert torch.equal(sample["image"], normalize(expected))
    assert sample["label"] == images.labels[5] and sample["index"] == 5

    augmented = TrainCrops(images, TrainCrop(24), seed=3)
    first, again = augmented[(2, 5)], augmented[(2, 5)]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["box"], again["box"])
    assert torch.equal(first["box"], sample["box"])  # flip and jitter come after the box: it is unchanged
    assert not torch.equal(augmented[(3, 5)]["box"], first["box"])


def test_flip_mirrors_the_crop_and_keeps_its_box(imagenet):
    images = image_folder(imagenet.root, "train", imagenet.wnids)
    unflipped = TrainCrops(images, TrainCrop(24, hflip=0.0, color_jitter=0.0), seed=0)[(0, 1)]
    flipped = TrainCrops(images, TrainCrop(24, hflip=1.0, color_jitter=0.0), seed=0)[(0, 1)]
    assert torch.equal(flipped["box"], unflipped["box"])
    assert torch.equal(flipped["image"], unflipped["image"].flip(-1))


def test_crops_do_not_depend_on_workers(imagenet):
    images = image_folder(imagenet.root, "train", imagenet.wnids)
    dataset = TrainCrops(images, TrainCrop(16), seed=1)

    def epoch_batches(workers):
        sampler = EpochSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=1)
        sampler.set_epoch(4)
        loader = DataLoader(dataset, batch_size=8, sampler=sampler, num_workers=workers)
        return [(b["index"], b["image"], b["box"]) for b in loader]

    for (i0, x0, b0), (i2, x2, b2) in zip(epoch_batches(0), epoch_batches(2)):
        assert torch.equal(i0, i2) and torch.equal(x0, x2) and torch.equal(b0, b2)


def test_train_crops_read_the_row_of_each_image(imagenet, labelmaps):
    from repro.labelmaps.reader import open_labelmaps
    images = image_folder(imagenet.root, "train", imagenet.wnids)
    dataset = TrainCrops(images, TrainCrop(16), seed=0, labelmaps=labelmaps)
    store = open_labelmaps(labelmaps)
    for index in (0, 7, 20):
        sample = dataset[(0, index)]
        values, ids = store.read([store.row_of(images.relpaths[index])])
        assert torch.equal(sample["labelmap_values"], values[0]) and torch.equal(sample["labelmap_ids"], ids[0])
        assert sample["labelmap_ids"].dtype == torch.int64 and sample["labelmap_values"].dtype == torch.float32


def test_a_batch_of_train_crops_reads_its_maps_at_once_and_equals_the_crops_read_one_by_one(tmp_path, imagenet,
                                                                                            labelmaps):
    from repro.labelmaps.packed import write_packed
    from repro.labelmaps.reader import open_labelmaps
    images = image_folder(imagenet.root, "train", imagenet.wnids)
    keys = [(1, index) for index in (5, 0, 30, 7, 2)]
    dataset = TrainCrops(images, TrainCrop(16), seed=0, labelmaps=labelmaps)
    for batched, key in zip(dataset.__getitems__(keys), keys):
        alone = dataset[key]
        assert batched.keys() == alone.keys()
        assert all(torch.equal(batched[name], alone[name]) for name in alone if torch.is_tensor(alone[name]))
    # a damaged map marks its own sample only, as read alone
    stored = open_labelmaps(labelmaps)
    values, ids = stored.read(np.arange(stored.num_images))
    damaged = write_packed(tmp_path / "nan_maps", stored.paths, values, ids, num_classes=stored.num_classes)
    on_disk = np.load(damaged / "values.npy", mmap_mode="r+")
    on_disk[stored.row_of(images.relpaths[30]), 0, 1, 1] = np.nan
    on_disk.flush()
    samples = TrainCrops(images, TrainCrop(16), seed=0, labelmaps=damaged).__getitems__(keys)
    assert [sorted(sample) for sample in samples] == [sorted(dataset[key]) for key in keys[:2]] + [
        ["bad_labelmap", "index"]] + [sorted(dataset[key]) for key in keys[3:]]
    assert images.relpaths[30] in samples[2]["bad_labelmap"] and samples[2]["index"] == 30


@pytest.mark.parametrize("size, crop_pct, resized", [(32, 1.0, 32), (28, 0.875, 32)])
def test_eval_view_resizes_then_centre_crops(size, crop_pct, resized):
    view = EvalView(size, crop_pct)
    assert view.resize_to == resized
    image = torch.randint(0, 256, (3, 30, 50), dtype=torch.uint8)
    out = view(image)
    assert out.shape == (3, size, size) and out.dtype == torch.float32


def test_an_eval_view_resizes_by_the_filter_it_is_given_bilinear_by_default():
    image = torch.randint(0, 256, (3, 30, 50), dtype=torch.uint8)
    bilinear = F.center_crop(F.resize(image, [32], interpolation=INTERPOLATION, antialias=True), [32, 32])
    bicubic = F.center_crop(F.resize(image, [32], interpolation=F.InterpolationMode.BICUBIC, antialias=True), [32, 32])
    assert torch.equal(EvalView(32, 1.0).crop(image), bilinear)
    assert torch.equal(EvalView(32, 1.0, interpolation="bicubic").crop(image), bicubic)
    assert not torch.equal(bilinear, bicubic)
