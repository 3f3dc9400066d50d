"""An ImageNet-layout installation (real ImageNet or the generated world): its classes, a training list and every
evaluation set that exists on disk, named by the metric prefixes the paper reports."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from repro.data.folders import ImageList, image_folder, integer_folder, read_classes, val_folder
from repro.data.labelsets import imagenet1k_wnids, read_label_sets, timm_real_json
from repro.notices import warn_once

# metric prefix -> ImageNetV2 folder name (Recht et al. release the three variants under these names)
IMAGENET_V2 = {
    "imagenetv2_top_images": "imagenetv2-top-images-format-val",
    "imagenetv2_matched_frequency": "imagenetv2-matched-frequency-format-val",
    "imagenetv2_threshold_0.7": "imagenetv2-threshold0.7-format-val",
}


@dataclass(frozen=True)
class EvalSet:
    """Images scored with their single labels as `<name>_top1/_top5`, and, on the same predictions, each
    multi-label benchmark of `label_sets` (e.g. "real", "shankar": one label list per image) as `<key>_top1`."""
    name: str
    images: ImageList
    label_sets: Mapping[str, list[list[int]]] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageNetData:
    root: Path
    wnids: list[str]
    class_names: list[str]
    train: ImageList
    eval_sets: list[EvalSet]
    skip_unreadable: bool = False  # data.skip_unreadable: train without images that cannot be decoded

    @property
    def num_classes(self) -> int:
        return len(self.wnids)

    @property
    def val(self) -> ImageList | None:
        """The ImageNet validation images (the per-epoch monitor), if the installation has them."""
        return next((s.images for s in self.eval_sets if s.name == "imagenet"), None)


def _first_existing(*paths) -> Path | None:
    return next((Path(p) for p in paths if p is not None and Path(p).exists()), None)


def imagenet_subset_indices(wnids: Sequence[str]) -> dict[int, int] | None:
    """ImageNet-1k class index -> the data's, where the data's classes are a proper subset of ImageNet-1k's
    (the same 1000 classes need no mapping: None); None too where they are not ImageNet's at all."""
    imagenet = imagenet1k_wnids()
    if list(wnids) == imagenet or not set(wnids) <= set(imagenet):
        return None
    position = {wnid: i for i, wnid in enumerate(imagenet)}
    return {position[wnid]: i for i, wnid in enumerate(wnids)}


def released_maps_classes(wnids: Sequence[str], maps_classes: int, where) -> list[str] | None:
    """How maps of ImageNet-1k ids (the released maps) serve data of classes `wnids`: renumbered to the data's
    wnids where those are a proper subset of ImageNet-1k's, as they are (None) where the class counts agree, and
    not at all otherwise (an error)."""
    if imagenet_subset_indices(wnids) is not None:
        return list(wnids)
    if len(wnids) != maps_classes:
        imagenet = set(imagenet1k_wnids())
        strangers = [wnid for wnid in wnids if wnid not in imagenet]
        stray = (f" ({len(strangers)} of them not ImageNet-1k classes: {', '.join(strangers[:3])}; if they are "
                 "stray folders of the data, move them out)" if len(strangers) < len(wnids) else "")
        raise ValueError(f"{where} holds {maps_classes}-class ids but the data have {len(wnids)} classes that are "
                         f"not a subset of ImageNet-1k's{stray}: give maps of the data's own classes (python -m "
                         "repro relabel)")
    return None


def imagenet_label_sets(val: ImageList, wnids: Sequence[str]) -> list[list[int]] | None:
    """ReaL from timm's copy of the official file (ImageNet-1k class indices), in the data's class indices: a
    subset of ImageNet's classes keeps the labels of its own classes. None where the data are not ImageNet's."""
    if not set(wnids) <= set(imagenet1k_wnids()):
        warn_once("the data's classes are not ImageNet-1k wnids, so timm's ReaL labels do not apply: set "
                   "data.real_json to label sets in the data's class indices")
        return None
    to_data = imagenet_subset_indices(wnids)
    sets = read_label_sets(timm_real_json(), val)
    if to_data is None:
        return sets
    return [sorted(to_data[c] for c in labels if c in to_data) for labels in sets]


def imagenet_v2_root(data_cfg: Mapping, root: str | os.PathLike) -> Path:
    """The folder holding the ImageNetV2 variants: data.v2_root, which must exist where it is set, else <root>/v2."""
    v2_root = data_cfg.get("v2_root")
    if v2_root is not None and not Path(v2_root).is_dir():
        raise FileNotFoundError(f"data.v2_root {v2_root} is not a folder: point it at the folder holding the "
                                f"ImageNetV2 variants ({', '.join(IMAGENET_V2.values())}), or set it to null "
                                f"to use {Path(root) / 'v2'}")
    return Path(v2_root or Path(root) / "v2")


def open_imagenet(root: str | os.PathLike, data_cfg: Mapping, train_splits: str | Sequence[str] = "train"
                  ) -> ImageNetData:
    """Read the installation at `root` with the paths of the config's `data` section.

    train_splits: the folder(s) to train on, e.g. ("extra", "train") for the annotator.
    Evaluation sets, each only if present: "imagenet" (val/ in either layout, `repro.data.folders.val_folder`,
    with "real" from data.real_json, else <root>/real.json, else, for ImageNet, timm's copy of the official file
    mapped to the data's classes; and "shankar" from data.shankar_json or <root>/shankar.json), and the three
    ImageNetV2 folders under data.v2_root (default <root>/v2; a v2_root that is set must exist)."""
    root = Path(root)
    wnids, names = read_classes(root)
    train = image_folder(root, train_splits, wnids)
    eval_sets = []
    if (root / "val").is_dir():
        val = val_folder(root, wnids, data_cfg.get("val_labels"))
        label_sets = {}
        real = _first_existing(data_cfg.get("real_json"), root / "real.json")
        if real is not None:
            label_sets["real"] = read_label_sets(real, val, len(wnids))
        elif data_cfg.get("source") == "imagenet":
            sets = imagenet_label_sets(val, wnids)
            if sets is not None:
                label_sets["real"] = sets
        shankar = _first_existing(data_cfg.get("shankar_json"), root / "shankar.json")
        if shankar is not None:
            label_sets["shankar"] = read_label_sets(shankar, val, len(wnids))
        eval_sets.append(EvalSet("imagenet", val, label_sets))
    v2_root = imagenet_v2_root(data_cfg, root)
    found = [name for name, folder in IMAGENET_V2.items() if (v2_root / folder).is_dir()]
    # ImageNetV2's folder numbers are ImageNet-1k's class indices
    folder_classes = imagenet_subset_indices(wnids) if data_cfg.get("source") == "imagenet" else None
    for name in found:
        eval_sets.append(EvalSet(name, integer_folder(v2_root / IMAGENET_V2[name], len(wnids), folder_classes)))
    if data_cfg.get("source") == "imagenet" and len(found) < len(IMAGENET_V2):
        missing = [IMAGENET_V2[name] for name in IMAGENET_V2 if name not in found]
        warn_once(f"ImageNetV2 {', '.join(missing)} not under {v2_root}: those columns stay empty")
    return ImageNetData(root, wnids, names, train, eval_sets, bool(data_cfg.get("skip_unreadable", False)))
