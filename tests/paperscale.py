"""A fake ImageNet in the real layouts, for the paper-scale path (docs/paper-scale.md): real wnids (a subset of
timm's `imagenet_synsets.txt`), train/<wnid>/<wnid>_<k>.JPEG, a flat val/ as the tarball unpacks with its labels
in LOC_val_solution.csv, ImageNetV2's three folders numbered by ImageNet-1k class index, released-format label
maps ([2, k, H, W] files carrying ImageNet-1k ids), and a plain timm state dict with a 1000-class head; and a fake
COCO 2017 (`build_coco_2017`) for Table 10.

The val images are real val numbers whose ReaL label set (timm's copy) is one of the subset's classes, so ReaL
scores through the shipped file line up with the fixture's labels.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from repro.data.imagenet import IMAGENET_V2
from repro.data.labelsets import imagenet1k_wnids, timm_real_json
from repro.labelmaps.official import save_official
from repro.models import create_model

CLASSES = 6
TRAIN_PER_CLASS = 8
VAL_PER_CLASS = 3
GRID = 4
ANNOTATOR = {"name": "resnet18", "kwargs": {"channels": [8, 16, 32, 64], "stem_width": 8}}


@dataclass(frozen=True)
class PaperScaleFixture:
    root: Path
    wnids: list[str]
    imagenet_ids: list[int]   # each class's ImageNet-1k index
    maps: Path                # released-format maps of train/
    annotator: Path           # a plain state dict of ANNOTATOR with a 1000-class head


def _image(rng: np.random.Generator, label: int, size=(48, 40)) -> Image.Image:
    colour = np.array([(label * 53) % 256, (label * 97 + 60) % 256, (label * 151 + 120) % 256], dtype=np.float64)
    pixels = colour + rng.normal(0, 25, size=(size[1], size[0], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def build_paper_scale(root: str | Path, seed: int = 0) -> PaperScaleFixture:
    root = Path(root)
    rng = np.random.default_rng(seed)
    imagenet = imagenet1k_wnids()
    imagenet_ids = [int(i) for i in np.linspace(1, 998, CLASSES).round()]
    wnids = [imagenet[i] for i in imagenet_ids]
    for label, wnid in enumerate(wnids):
        (root / "train" / wnid).mkdir(parents=True, exist_ok=True)
        for k in range(TRAIN_PER_CLASS):
            _image(rng, label).save(root / "train" / wnid / f"{wnid}_{k}.JPEG")
    # flat val: real val numbers whose ReaL set is a single class of the subset
    real = json.loads(timm_real_json().read_text())
    rows = ["ImageId,PredictionString"]
    (root / "val").mkdir(parents=True, exist_ok=True)
    for label, imagenet_id in enumerate(imagenet_ids):
        numbers = [n for n, labels in enumerate(real, start=1) if labels == [imagenet_id]][:VAL_PER_CLASS]
        for number in numbers:
            _image(rng, label).save(root / "val" / f"ILSVRC2012_val_{number:08d}.JPEG")
            rows.append(f"ILSVRC2012_val_{number:08d},{wnids[label]} 2 3 40 35")
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    for folder in IMAGENET_V2.values():
        for label, imagenet_id in enumerate(imagenet_ids):
            (root / "v2" / folder / str(imagenet_id)).mkdir(parents=True, exist_ok=True)
            _image(rng, label).save(root / "v2" / folder / str(imagenet_id) / f"{label}.jpeg")
    maps = root / "relabel_maps"
    for label, wnid in enumerate(wnids):
        for k in range(TRAIN_PER_CLASS):
            values = torch.tensor([8.0, 3.0, 2.0, 1.0, 0.5])[:, None, None].expand(5, GRID, GRID).clone()
            ids = torch.as_tensor(rng.integers(0, 1000, size=(5, GRID, GRID)))
            ids[0] = imagenet_ids[label]
            save_official(maps / wnid / f"{wnid}_{k}.pt", values, ids)
    annotator = root / "annotator_state_dict.pth"
    torch.manual_seed(seed)
    torch.save(create_model(ANNOTATOR, num_classes=1000).state_dict(), annotator)
    return PaperScaleFixture(root, wnids, imagenet_ids, maps, annotator)


# The paper profile scaled down to seconds: what docs/paper-scale.md's "try it small" line sets.
SCALED_DOWN = ["train.model=" + json.dumps({"name": "resnet18", "kwargs": {"channels": [8, 16, 32, 64],
                                                                           "stem_width": 8}}),
               "train.epochs=1", "train.batch_size=8", "train.crop_size=32", "train.eval_size=32",
               "train.eval_crop_pct=1.0", "train.warmup_epochs=0", "train.amp=false", "resources.workers=0",
               "resources.batch_size_eval=16"]


COCO_CATEGORIES = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]  # ids with a gap, as COCO's


def build_coco_2017(root: str | Path, images_per_split: int = 2) -> Path:
    """COCO 2017's layout: annotations/instances_{train,val}2017.json, train2017/, val2017/. Odd images hold a
    dog (a square RLE mask), every third a person (a polygon), the rest nothing."""
    root = Path(root)
    square = np.zeros((16, 16), dtype=np.uint8)
    square[2:8, 2:8] = 1
    rle = mask_utils.encode(np.asfortranarray(square))
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / f"{split}2017").mkdir()
        images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 16, "height": 16}
                  for i in range(1, images_per_split + 1)]
        annotations = []
        for image in images:
            Image.new("RGB", (16, 16), (image["id"] * 30 % 255, 80, 120)).save(
                root / f"{split}2017" / image["file_name"])
            if image["id"] % 2:
                annotations.append({"image_id": image["id"], "category_id": 18, "iscrowd": 0, "bbox": [2, 2, 6, 6],
                                    "area": 36, "segmentation": {"size": [16, 16],
                                                                 "counts": rle["counts"].decode("ascii")}})
            if image["id"] % 3 == 0:
                annotations.append({"image_id": image["id"], "category_id": 1, "iscrowd": 0,
                                    "bbox": [9, 9, 5, 5], "area": 25, "segmentation": [[9, 9, 14, 9, 14, 14, 9, 14]]})
        for number, annotation in enumerate(annotations, 1):
            annotation["id"] = number
        (root / "annotations" / f"instances_{split}2017.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": COCO_CATEGORIES}))
    return root
