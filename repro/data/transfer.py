"""Table 8's transfer tasks in the trainer's terms (`ImageNetData`): the task's training images less a held-out
validation share (the set a fine-tuning grid is chosen on), that share (`heldout_*` metrics) and the task's test
split (`test_*`).

Paper scale: five datasets read by torchvision's own classes from `transfer.root`, as each unpacks (never
downloaded), at their standard splits. Embedded scale: the world's `downstream/<task>/{train,test}/<class>/`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from repro.data.folders import ImageList, image_folder
from repro.data.imagenet import EvalSet, ImageNetData
from repro.imagefiles import class_folders

# task -> (torchvision class, training split(s), test split, the folder the class reads under the root)
TORCHVISION_TASKS = {
    "food101": ("Food101", ("train",), "test", "food-101"),
    "stanford_cars": ("StanfordCars", ("train",), "test", "stanford_cars"),
    "dtd": ("DTD", ("train", "val"), "test", "dtd"),  # partition 1; train + val is the training set
    "fgvc_aircraft": ("FGVCAircraft", ("trainval",), "test", "fgvc-aircraft-2013b"),
    "oxford_pets": ("OxfordIIITPet", ("trainval",), "test", "oxford-iiit-pet"),
}


def _torchvision_split(task: str, root: Path, split: str) -> tuple[list[str], list[str], list[int]]:
    """(class names, image files, labels) of one split, read by torchvision's dataset class (its private lists of
    files and labels: the classes load images one at a time, the trainer wants the list)."""
    import torchvision.datasets

    name, _, _, folder = TORCHVISION_TASKS[task]
    try:
        dataset = getattr(torchvision.datasets, name)(str(root), split=split, download=False)
    except (RuntimeError, FileNotFoundError) as error:
        raise FileNotFoundError(f"transfer task {task}: torchvision's {name} found no {split} split under "
                                f"{root / folder} ({error}): unpack the dataset there as it ships, or set "
                                f"transfer.root") from None
    if name == "StanfordCars":
        files, labels = [path for path, _ in dataset._samples], [label for _, label in dataset._samples]
    else:
        files = getattr(dataset, "_images", None) or dataset._image_files
        labels = list(dataset._labels)
    return list(dataset.classes), [str(f) for f in files], [int(label) for label in labels]


def _torchvision_task(task: str, root: Path) -> tuple[list[str], ImageList, ImageList]:
    _, train_splits, test_split, _ = TORCHVISION_TASKS[task]
    classes, files, labels = [], [], []
    for split in (*train_splits, test_split):
        names, split_files, split_labels = _torchvision_split(task, root, split)
        if split == train_splits[0]:
            classes = names
        index = {name: i for i, name in enumerate(classes)}
        unknown = sorted({names[label] for label in split_labels} - set(index))
        if unknown:  # DTD and Pets name the classes of each split from its own file
            raise ValueError(f"transfer task {task}: the {split} split has classes the training split lacks "
                             f"({', '.join(unknown[:3])}): the dataset under {root} is incomplete")
        files.append(split_files)
        labels.append([index[names[label]] for label in split_labels])
    relative = [[os.path.relpath(f, root) for f in split_files] for split_files in files]
    train = ImageList(root, tuple(p for part in relative[:-1] for p in part),
                      np.asarray([label for part in labels[:-1] for label in part], dtype=np.int64))
    test = ImageList(root, tuple(relative[-1]), np.asarray(labels[-1], dtype=np.int64))
    return classes, train, test


def _world_task(task: str, world_root: Path) -> tuple[list[str], ImageList, ImageList]:
    folder = world_root / "downstream" / task
    if not (folder / "train").is_dir():
        tasks = sorted(path.parent.name for path in (world_root / "downstream").glob("*/train"))
        raise FileNotFoundError(f"transfer task {task}: no {folder / 'train'}; the world's tasks are "
                                f"{', '.join(tasks) or 'none'}")
    classes = class_folders(folder / "train")
    return classes, image_folder(folder, "train", classes), image_folder(folder, "test", classes)


def heldout_split(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) indices: `share` of each class's images (at least one where a class has two or more),
    drawn with `seed`, so every class is both trained on and validated on."""
    rng = np.random.default_rng([int(seed), 8])
    kept, held = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = min(max(int(round(share * len(members))), 1), len(members) - 1) if len(members) > 1 else 0
        held.extend(members[:count])
        kept.extend(members[count:])
    return np.sort(np.asarray(kept, dtype=np.int64)), np.sort(np.asarray(held, dtype=np.int64))


def open_transfer(data: Mapping, root: Path) -> ImageNetData:
    """A transfer data spec (`repro.pipeline.transfer_data_spec`) opened at `root` (the world's folder, or the
    datasets' root)."""
    task = data["task"]
    if data["source"] == "world":
        classes, train, test = _world_task(task, root)
    elif task in TORCHVISION_TASKS:
        classes, train, test = _torchvision_task(task, root)
    else:
        raise ValueError(f"unknown transfer task {task!r}: one of {', '.join(TORCHVISION_TASKS)}")
    kept, held = heldout_split(train.labels, float(data["heldout"]), int(data["heldout_seed"]))
    return ImageNetData(root=root, wnids=list(classes), class_names=list(classes), train=train.subset(kept),
                        eval_sets=[EvalSet("heldout", train.subset(held)), EvalSet("test", test)],
                        skip_unreadable=bool(data.get("skip_unreadable")))
