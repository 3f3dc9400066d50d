"""Tiny copies of the five fine-grained datasets in the layouts they unpack to, as torchvision's classes read
them: two or three classes, a few images per split (Table 8's paper-scale readers are tested on them)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("alpha", "beta", "gamma")
TRAIN_PER_CLASS, TEST_PER_CLASS = 4, 2


def _image(path: Path, label: int, k: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([label, k])
    pixels = rng.integers(0, 40, (24, 24, 3), dtype=np.uint8) + np.uint8(60 * label)
    Image.fromarray(pixels).save(path)


def _items(split: str):
    """(class index, class name, image stem) of a split."""
    count = TRAIN_PER_CLASS if split != "test" else TEST_PER_CLASS
    offset = 0 if split != "test" else 100
    return [(c, name, f"{name}_{offset + k}") for c, name in enumerate(CLASSES) for k in range(count)]


def food101(root: Path) -> None:
    base = root / "food-101"
    for split in ("train", "test"):
        meta = {}
        for c, name, stem in _items(split):
            _image(base / "images" / name / f"{stem}.jpg", c, len(meta.get(name, [])))
            meta.setdefault(name, []).append(f"{name}/{stem}")
        (base / "meta").mkdir(parents=True, exist_ok=True)
        (base / "meta" / f"{split}.json").write_text(json.dumps(meta))


def stanford_cars(root: Path) -> None:
    from scipy.io import savemat

    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True, exist_ok=True)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array(CLASSES, dtype=object)})
    for split, mat in (("train", base / "devkit" / "cars_train_annos.mat"),
                       ("test", base / "cars_test_annos_withlabels.mat")):
        records = []
        for c, _, stem in _items(split):
            _image(base / f"cars_{split}" / f"{stem}.jpg", c, len(records))
            records.append((f"{stem}.jpg", c + 1))  # the release numbers classes from 1
        annotations = np.array(records, dtype=[("fname", object), ("class", np.int64)])
        savemat(mat, {"annotations": annotations})


def dtd(root: Path) -> None:
    data = root / "dtd" / "dtd"
    for split in ("train", "val", "test"):
        lines = []
        for c, name, stem in _items(split):
            stem = f"{stem}_{split}"
            _image(data / "images" / name / f"{stem}.jpg", c, len(lines))
            lines.append(f"{name}/{stem}.jpg")
        (data / "labels").mkdir(parents=True, exist_ok=True)
        (data / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")


def fgvc_aircraft(root: Path) -> None:
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = [f"{name.title()}-{k}00" for k, name in enumerate(CLASSES, 1)]  # variant names hold dashes, spaces
    data.mkdir(parents=True, exist_ok=True)
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    for split in ("trainval", "test"):
        lines = []
        for c, _, stem in _items(split):
            image_id = f"{1000000 + len(lines) + (500 if split == 'test' else 0)}"
            _image(data / "images" / f"{image_id}.jpg", c, len(lines))
            lines.append(f"{image_id} {variants[c]}")
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")


def oxford_pets(root: Path) -> None:
    base = root / "oxford-iiit-pet"
    (base / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
    for split in ("trainval", "test"):
        lines = []
        for c, name, stem in _items(split):
            image_id = f"{name.title()}_{stem.rsplit('_', 1)[1]}"  # <Breed>_<k>, as the release names them
            _image(base / "images" / f"{image_id}.jpg", c, len(lines))
            lines.append(f"{image_id} {c + 1} {1 + c % 2} 1")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")


BUILDERS = {"food101": food101, "stanford_cars": stanford_cars, "dtd": dtd, "fgvc_aircraft": fgvc_aircraft,
            "oxford_pets": oxford_pets}
