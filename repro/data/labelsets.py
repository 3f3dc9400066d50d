"""Multi-label validation sets in ReaL's format: a JSON list, one entry per val image in sorted file-name order
(`ILSVRC2012_val_00000001` first), each the list of class indices present; an empty list marks an image the
raters could not label, which the metric excludes. The stricter Shankar-style set uses the same format.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import timm

from repro.data.folders import ImageList
from repro.notices import warn_once

VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})")


def timm_real_json() -> Path:
    """The official ReaL labels for the 50,000 ImageNet val images, as shipped inside timm."""
    return Path(timm.__file__).parent / "data" / "_info" / "imagenet_real_labels.json"


def imagenet1k_wnids() -> list[str]:
    """ImageNet-1k's wnids in class-index order, as shipped inside timm: the order of the released label maps,
    of ReaL's class indices and of every pretrained ImageNet head."""
    path = Path(timm.__file__).parent / "data" / "_info" / "imagenet_synsets.txt"
    return path.read_text().split()


def read_label_sets(json_path: str | os.PathLike, images: ImageList, num_classes: int | None = None
                    ) -> list[list[int]]:
    """The label set of each image of `images` (a val split), matched by the number in its ILSVRC val file name,
    so a val folder holding only part of the 50,000 images still lines up with the full file. Class indices
    are the data's own; with num_classes, an index outside 0..num_classes-1 is an error."""
    entries = json.loads(Path(json_path).read_text())
    sets = []
    for relpath in images.relpaths:
        match = VAL_NAME.search(Path(relpath).name)
        if match is None:
            raise ValueError(f"{relpath} is not named ILSVRC2012_val_<8 digits>; it cannot be matched to {json_path}")
        number = int(match.group(1))
        if not 1 <= number <= len(entries):
            raise ValueError(f"{relpath} has no entry in {json_path} ({len(entries)} entries)")
        labels = sorted(int(c) for c in entries[number - 1])
        if num_classes is not None and any(not 0 <= c < num_classes for c in labels):
            raise ValueError(f"{json_path}: entry {number} holds class {labels[-1]}, outside the data's "
                             f"{num_classes} classes: a label-set file holds the data's own class indices")
        sets.append(labels)
    numbers = {int(VAL_NAME.search(Path(relpath).name).group(1)) for relpath in images.relpaths}
    if len(entries) > len(numbers) == max(numbers, default=0):  # the folder holds val images 1..N, all of them
        warn_once(f"{json_path} has {len(entries)} entries for the {len(numbers)} val images (numbered 1.."
                  f"{len(numbers)}): the {len(entries) - len(numbers)} beyond them are unused; is it the file of "
                  f"this val set?")
    return sets
