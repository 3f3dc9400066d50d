"""A tiny ImageNet-layout installation for tests (docs/data-layout.md), and small configs that train on it fast.

`build_imagenet(root)` writes LOC_synset_mapping.txt, train/ extra/ val/ with WordNet-style class folders,
ILSVRC-named val files numbered in an order unrelated to their classes (as in ImageNet), real.json (with empty and
multi-label entries), shankar.json, and the three ImageNetV2 folders with integer class folders. Images are
non-square (40 x 32) so width and height are never confused, and each class has its own colour so a model can
learn something in a few steps.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from repro.config import profile_config, with_changes
from repro.data.folders import image_folder
from repro.data.imagenet import IMAGENET_V2
from repro.labelmaps.packed import write_packed
from tests.regression.record import TIMED

NUM_CLASSES = 12  # > 10, so string order of integer folders ("10" < "2") differs from numeric order
WIDTH, HEIGHT = 40, 32
TINY_MODEL = {"name": "resnet18", "kwargs": {"channels": [8, 16, 32, 64], "stem_width": 8}}


@dataclass(frozen=True)
class Fixture:
    root: Path
    wnids: list[str]
    val_labels: list[int]        # by val number - 1
    real: list[list[int]]        # real.json
    shankar: list[list[int]]     # shankar.json


def without_timing(metrics: dict) -> dict:
    """A run's metrics less those that measure the machine (wall times, speeds, others' share of the CPUs): the
    regression record's rule (`tests.regression.record.TIMED`)."""
    return {k: v for k, v in metrics.items() if not TIMED.search(k)}


def wnid(index: int) -> str:
    return f"n9{index:07d}"


def _image(rng: np.random.Generator, label: int) -> Image.Image:
    colour = np.array([(label * 53) % 256, (label * 97 + 60) % 256, (label * 151 + 120) % 256], dtype=np.float64)
    pixels = colour + rng.normal(0, 25, size=(HEIGHT, WIDTH, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def build_imagenet(root: str | Path, train_per_class: int = 4, extra_per_class: int = 2, val_per_class: int = 2,
                   v2_per_class: int = 1, seed: int = 0) -> Fixture:
    root = Path(root)
    rng = np.random.default_rng(seed)
    wnids = [wnid(i) for i in range(NUM_CLASSES)]
    (root / "LOC_synset_mapping.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} class {i}, thing\n" for i, w in enumerate(wnids)))
    for split, per_class in (("train", train_per_class), ("extra", extra_per_class)):
        for label, w in enumerate(wnids):
            folder = root / split / w
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                _image(rng, label).save(folder / f"{w}_{k}.JPEG", quality=95)
    # val numbers shuffled across classes, as in ImageNet
    val_labels = list(rng.permutation(np.repeat(np.arange(NUM_CLASSES), val_per_class)).tolist())
    for number, label in enumerate(val_labels, start=1):
        folder = root / "val" / wnids[label]
        folder.mkdir(parents=True, exist_ok=True)
        _image(rng, label).save(folder / f"ILSVRC2012_val_{number:08d}.JPEG", quality=95)
    real, shankar = [], []
    for number, label in enumerate(val_labels, start=1):
        other = (label + 1) % NUM_CLASSES
        kind = number % 4
        real.append([] if kind == 0 else sorted({label, other}) if kind == 1 else [label])
        shankar.append([] if kind in (0, 2) else [label])
    (root / "real.json").write_text(json.dumps(real))
    (root / "shankar.json").write_text(json.dumps(shankar))
    for folder_name in IMAGENET_V2.values():
        for label in range(NUM_CLASSES):
            folder = root / "v2" / folder_name / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(v2_per_class):
                _image(rng, label).save(folder / f"{label}_{k}.jpeg", quality=95)
    return Fixture(root, wnids, val_labels, real, shankar)


def build_labelmaps(fixture: Fixture, out_dir: str | Path, grid: int = 4) -> Path:
    """A packed top-3 label-map store for train/, rows in an order unrelated to the folder order. Image i of the
    training list: every fourth shows a second object (class label + 1) in its rightmost quarter; every fifth is
    one the annotator gets wrong (class label + 2 everywhere), so label cleaning drops it."""
    images = image_folder(fixture.root, "train", fixture.wnids)
    count = len(images)
    values = np.tile(np.array([6.0, 2.0, 1.0], dtype=np.float32)[:, None, None], (count, 1, grid, grid))
    ids = np.zeros((count, 3, grid, grid), dtype=np.int64)
    for i, label in enumerate(images.labels):
        main = (label + 2) % NUM_CLASSES if i % 5 == 4 else label
        ids[i, 0] = main
        if i % 4 == 0:
            ids[i, 0, :, 3 * grid // 4:] = (label + 1) % NUM_CLASSES
        ids[i, 1] = (ids[i, 0] + 3) % NUM_CLASSES
        ids[i, 2] = (ids[i, 0] + 4) % NUM_CLASSES
    order = np.random.default_rng(1).permutation(count)
    return write_packed(out_dir, [images.relpaths[i] for i in order], values[order], ids[order],
                        num_classes=NUM_CLASSES)


def tiny_config(**changes) -> dict:
    """The smoke profile with a tiny ResNet-18, 32 px crops and batch 8, changed by dotted keys."""
    cfg = profile_config("smoke")
    base = {"train.model": TINY_MODEL, "train.epochs": 1, "train.batch_size": 8, "train.accum_steps": 1,
            "train.lr": 0.05, "train.warmup_epochs": 0, "train.crop_size": 32, "train.eval_size": 32,
            "train.eval_crop_pct": 1.0, "resources.workers": 0, "resources.batch_size_eval": 16}
    return with_changes(cfg, {**base, **changes})
