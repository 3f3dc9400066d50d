"""Image lists read from ImageNet-style folders (docs/data-layout.md).

An `ImageList` is a root plus root-relative image paths and their class indices. The relative path
(`train/<wnid>/<file>`) is the image's name everywhere else in the suite: the label-map store's index and the
COCO annotations use it too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from repro.imagefiles import is_image, list_images

SYNSET_MAPPING = "LOC_synset_mapping.txt"


@dataclass(frozen=True)
class ImageList:
    root: Path
    relpaths: tuple[str, ...]
    labels: np.ndarray  # int64 [N]

    def __post_init__(self):
        if len(self.relpaths) != len(self.labels):
            raise ValueError(f"{len(self.relpaths)} paths but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.relpaths)

    def path(self, index: int) -> Path:
        return self.root / self.relpaths[index]

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ImageList":
        indices = np.asarray(indices, dtype=np.int64)
        return ImageList(self.root, tuple(self.relpaths[i] for i in indices), self.labels[indices])


def _sorted_files(folder: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_file() and is_image(entry.name))


def read_classes(root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(wnids, names) in class-index order: `LOC_synset_mapping.txt` where present, else the sorted class folders
    of the first split found (names are then the wnids)."""
    root = Path(root)
    mapping = root / SYNSET_MAPPING
    if mapping.exists():
        lines = [line.split(maxsplit=1) for line in mapping.read_text().splitlines() if line.strip()]
        wnids = [parts[0] for parts in lines]
        names = [parts[1] if len(parts) > 1 else parts[0] for parts in lines]
        if wnids != sorted(wnids):
            raise ValueError(f"{mapping} is not in sorted wnid order, which defines the class indices")
        return wnids, names
    for split in ("train", "val", "extra"):
        if (root / split).is_dir():
            wnids = sorted(entry.name for entry in os.scandir(root / split) if entry.is_dir())
            return wnids, list(wnids)
    raise FileNotFoundError(f"{root} has neither {SYNSET_MAPPING} nor a train/, val/ or extra/ folder")


def image_folder(root: str | os.PathLike, splits: str | Sequence[str], wnids: Sequence[str]) -> ImageList:
    """The images of one split or the union of several (e.g. ("extra", "train")), labelled by wnid folder.

    A class folder missing from a split is allowed (that class has no images there); a folder that is not a known
    class is an error rather than silently skipped."""
    root = Path(root)
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    class_index = {wnid: i for i, wnid in enumerate(wnids)}
    relpaths, labels = [], []
    for split in splits:
        split_dir = root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"no split folder {split_dir}")
        for wnid in sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir()):
            if wnid not in class_index:
                raise ValueError(f"{split_dir / wnid} is not one of the {len(wnids)} classes")
            files = _sorted_files(split_dir / wnid)
            relpaths.extend(f"{split}/{wnid}/{name}" for name in files)
            labels.extend([class_index[wnid]] * len(files))
    return ImageList(root, tuple(relpaths), np.asarray(labels, dtype=np.int64))


def unlabelled_folder(root: str | os.PathLike, split: str) -> ImageList:
    """Every image under <root>/<split> at any depth (`list_images`), labelled -1: a pool whose own labels are not
    the suite's classes, like ImageNet-21k for Table 5's extra data."""
    root = Path(root)
    if not (root / split).is_dir():  # checked here so that the error names the folder as the extra-data pool
        raise FileNotFoundError(f"no image pool folder {root / split}")
    relpaths = list_images(root, split)
    return ImageList(root, tuple(relpaths), np.full(len(relpaths), -1, dtype=np.int64))


def integer_folder(root: str | os.PathLike) -> ImageList:
    """An ImageNetV2-style folder whose class folders are integers, read as integers (folder "10" is class 10)."""
    root = Path(root)
    classes = sorted((int(entry.name), entry.name) for entry in os.scandir(root)
                     if entry.is_dir() and entry.name.isdigit())
    relpaths, labels = [], []
    for label, name in classes:
        files = _sorted_files(root / name)
        relpaths.extend(f"{name}/{file}" for file in files)
        labels.extend([label] * len(files))
    return ImageList(root, tuple(relpaths), np.asarray(labels, dtype=np.int64))
