"""How a robustness set's class folders are scored by a model of other classes.

Two layouts occur. ImageNet-A, -R and -C, and every set of the world, name their folders by the model's own wnids
(some of them): a prediction is the argmax over the classes the set holds, as those sets' authors score them.
ImageNet-9 (the backgrounds challenge) names 9 super-class folders that sort in its class order (`00_dog`, ...):
the model's 1000-way top-1 counts as the super-class whose member it is, and as wrong for the 630 classes in none
(the release's own protocol; the table is `repro/data/imagenet9.json`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from repro.imagefiles import class_folders

IMAGENET9 = Path(__file__).resolve().parent.parent / "data" / "imagenet9.json"


@lru_cache(maxsize=1)
def imagenet9_classes() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """ImageNet-9's super-classes in folder order: (name, the ImageNet wnids that count as it)."""
    table = json.loads(IMAGENET9.read_text())["classes"]
    return tuple((c["name"], tuple(c["imagenet_wnids"])) for c in table)


@dataclass(frozen=True)
class SetClasses:
    """A set's class folders (sorted; folder k is set label k) and how model logits become set labels."""
    names: tuple[str, ...]
    owner: np.ndarray   # [model classes]: the set label each model class counts as, -1 for none
    restrict: bool      # argmax over the owned classes only (ImageNet-A/-R), else over all (ImageNet-9)

    def predict(self, logits: torch.Tensor) -> np.ndarray:
        """The set label of each row's prediction (-1: a model class outside the set, always wrong)."""
        if self.restrict:
            logits = logits.masked_fill(torch.as_tensor(self.owner < 0), float("-inf"))
        return self.owner[logits.argmax(dim=1).numpy()]


def set_classes(folder: str | os.PathLike, wnids: Sequence[str]) -> SetClasses:
    """The classes of `folder`/<class>/<image> for a model of classes `wnids` (see the module's docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder}")
    names = tuple(class_folders(folder))
    if not names:
        raise FileNotFoundError(f"no class folders under {folder}")
    index = {wnid: i for i, wnid in enumerate(wnids)}
    owner = np.full(len(wnids), -1, dtype=np.int64)
    if all(name in index for name in names):
        owner[[index[name] for name in names]] = np.arange(len(names))
        return SetClasses(names, owner, restrict=True)
    superclasses = imagenet9_classes()
    if len(names) != len(superclasses):
        raise ValueError(f"{folder}: class folders {', '.join(names[:3])}, ... are neither the model's classes (wnids) "
                         f"nor ImageNet-9's {len(superclasses)} super-classes")
    misnamed = next(((name, sup) for name, (sup, _) in zip(names, superclasses) if sup not in name), None)
    if misnamed:  # folders named otherwise sort in another order: dogs would be scored as birds
        expected = ", ".join(f"0{k}_{sup}" for k, (sup, _) in enumerate(superclasses))
        raise ValueError(f"{folder}: class folder {misnamed[0]!r} is in the place of ImageNet-9's {misnamed[1]!r}: "
                         f"the folders must be the release's {expected} (renamed copies score each class as another)")
    members = [wnid for _, group in superclasses for wnid in group]
    missing = [wnid for wnid in members if wnid not in index]
    if missing:
        raise ValueError(f"{folder}: its {len(names)} folders are read as ImageNet-9's super-classes, which needs a "
                         f"model of ImageNet's classes; {len(missing)} of their {len(members)} ImageNet wnids (e.g. "
                         f"{missing[0]}) are not among the model's {len(wnids)} classes")
    for label, (_, group) in enumerate(superclasses):
        owner[[index[wnid] for wnid in group]] = label
    return SetClasses(names, owner, restrict=False)
