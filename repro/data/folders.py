"""Image lists read from ImageNet-style folders (docs/data-layout.md).

An `ImageList` is a root plus root-relative image paths and their class indices. The relative path
(`train/<wnid>/<file>`) is the image's name everywhere else in the suite: the label-map store's index and the
COCO annotations use it too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from repro.imagefiles import class_folders, is_hidden, is_image, list_images

SYNSET_MAPPING = "LOC_synset_mapping.txt"
VAL_SOLUTION = "LOC_val_solution.csv"  # ImageNet's val boxes, whose first wnid per image labels a flat val/


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
            wnids = class_folders(root / split)
            return wnids, list(wnids)
    raise FileNotFoundError(f"{root} has neither {SYNSET_MAPPING} nor a train/, val/ or extra/ folder: set data.root "
                            "to the folder that holds ImageNet's train/ and val/")


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
        for wnid in class_folders(split_dir):
            if wnid not in class_index:
                raise ValueError(f"{split_dir / wnid} is not one of the {len(wnids)} classes")
            files = _sorted_files(split_dir / wnid)
            relpaths.extend(f"{split}/{wnid}/{name}" for name in files)
            labels.extend([class_index[wnid]] * len(files))
    return ImageList(root, tuple(relpaths), np.asarray(labels, dtype=np.int64))


def val_folder(root: str | os.PathLike, wnids: Sequence[str], labels_file: str | os.PathLike | None = None
               ) -> ImageList:
    """ImageNet's val split in either layout: class folders `val/<wnid>/<file>`, or flat `val/<file>` as the
    tarball unpacks, labelled by `labels_file` (default `<root>/LOC_val_solution.csv`; see `read_val_labels`).

    A flat image whose class is not one of `wnids` (a subset of ImageNet's classes) is left out, as a class
    folder outside the subset would be absent."""
    root = Path(root)
    val_dir = root / "val"
    entries = list(os.scandir(val_dir))
    folders = [entry.name for entry in entries if entry.is_dir() and not is_hidden(entry.name)]
    files = sorted(entry.name for entry in entries if entry.is_file() and is_image(entry.name))
    if folders and files:
        raise ValueError(f"{val_dir} holds both class folders and {len(files)} images: keep one layout "
                         "(val/<wnid>/<file> or flat val/<file> with LOC_val_solution.csv)")
    if not files:
        return image_folder(root, "val", wnids)
    labels_file = Path(labels_file) if labels_file else root / VAL_SOLUTION
    if not labels_file.exists():
        raise FileNotFoundError(f"{val_dir} holds {len(files)} images without class folders: put ImageNet's "
                                f"{VAL_SOLUTION} at {root / VAL_SOLUTION} or set data.val_labels to a labels file")
    by_image = read_val_labels(labels_file, files)
    class_index = {wnid: i for i, wnid in enumerate(wnids)}
    kept = [name for name in files if by_image[name] in class_index]
    if not kept:
        raise ValueError(f"{labels_file} gives none of the {len(files)} val images a class of the data (e.g. "
                         f"{by_image[files[0]]!r} for {files[0]}, the data's first class is {wnids[0]}): give the "
                         "labels of this val set")
    return ImageList(root, tuple(f"val/{name}" for name in kept),
                     np.asarray([class_index[by_image[name]] for name in kept], dtype=np.int64))


def read_val_labels(path: str | os.PathLike, files: Sequence[str]) -> dict[str, str]:
    """file name -> wnid for the flat val images `files`, from ImageNet's LOC_val_solution.csv (the first box's
    wnid) or a text file of one wnid per line in sorted file-name order (tensorflow-datasets'
    validation_labels.txt). Class numbers are refused: the devkit's ground truth counts from 1 in its own class
    order, other files from 0 in sorted-wnid order, and read the wrong way every label would be wrong."""
    from repro.data.localisation import read_loc_solution

    path = Path(path)
    with open(path) as f:
        first = f.readline()
    if first.startswith("ImageId"):
        by_stem = {stem: boxes[0][0] for stem, boxes in read_loc_solution(path).items()}
    else:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        for number, line in enumerate(lines, start=1):
            if len(line.split()) != 1 or line.isdigit():
                raise ValueError(f"{path}: label {number} reads {line!r}, where a labels file gives each val "
                                 "image's wnid, one per line in sorted file-name order (class numbers are not read: "
                                 "the devkit's count from 1 in its own order): give such a file or "
                                 f"{VAL_SOLUTION}")
        if len(lines) != len(files):
            raise ValueError(f"{path} has {len(lines)} labels for the {len(files)} images of val/: a labels file "
                             "lists one wnid per val image in sorted file-name order")
        by_stem = {Path(name).stem: label for name, label in zip(files, lines)}
    missing = [name for name in files if Path(name).stem not in by_stem]
    if missing:
        raise ValueError(f"{path} has no label for {len(missing)} val images, e.g. {missing[0]}: give the labels "
                         "file of this val set")
    return {name: by_stem[Path(name).stem] for name in files}


def unlabelled_folder(root: str | os.PathLike, split: str) -> ImageList:
    """Every image under <root>/<split> at any depth (`list_images`), labelled -1: a pool whose own labels are not
    the suite's classes, like ImageNet-21k for Table 5's extra data."""
    root = Path(root)
    if not (root / split).is_dir():  # checked here so that the error names the folder as the extra-data pool
        raise FileNotFoundError(f"no image pool folder {root / split}")
    relpaths = list_images(root, split)
    return ImageList(root, tuple(relpaths), np.full(len(relpaths), -1, dtype=np.int64))


IMAGENET1K_CLASSES = 1000


def integer_folder(root: str | os.PathLike, num_classes: int, folder_classes: Mapping[int, int] | None = None
                   ) -> ImageList:
    """An ImageNetV2-style folder whose class folders are integers, read as integers (folder "10" is class 10).

    folder_classes: folder number -> the data's class index, where the numbers are ImageNet-1k's and the data a
    subset of its classes (folders of other classes are left out); else a number must be a class of the data."""
    root = Path(root)
    classes = sorted((int(entry.name), entry.name) for entry in os.scandir(root)
                     if entry.is_dir() and entry.name.isdigit())
    relpaths, labels = [], []
    for number, name in classes:
        if folder_classes is not None:
            if number >= IMAGENET1K_CLASSES:
                raise ValueError(f"{root / name}: class folder {number} is outside ImageNet-1k's "
                                 f"{IMAGENET1K_CLASSES} classes (ImageNetV2 numbers its folders 0..999): remove it "
                                 f"or point data.v2_root at ImageNetV2")
            if number not in folder_classes:
                continue
            label = folder_classes[number]
        elif number >= num_classes:
            raise ValueError(f"{root / name}: class folder {number} is outside the data's {num_classes} classes")
        else:
            label = number
        files = _sorted_files(root / name)
        relpaths.extend(f"{name}/{file}" for file in files)
        labels.extend([label] * len(files))
    return ImageList(root, tuple(relpaths), np.asarray(labels, dtype=np.int64))
