"""An ImageNet-layout installation (real ImageNet or the generated world): its classes, a training list and every
evaluation set that exists on disk, named by the metric prefixes the paper reports."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from repro.data.folders import ImageList, image_folder, integer_folder, read_classes
from repro.data.labelsets import read_label_sets, timm_real_json

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

    @property
    def num_classes(self) -> int:
        return len(self.wnids)

    @property
    def val(self) -> ImageList | None:
        """The ImageNet validation images (the per-epoch monitor), if the installation has them."""
        return next((s.images for s in self.eval_sets if s.name == "imagenet"), None)


def _first_existing(*paths) -> Path | None:
    return next((Path(p) for p in paths if p is not None and Path(p).exists()), None)


def open_imagenet(root: str | os.PathLike, data_cfg: Mapping, train_splits: str | Sequence[str] = "train"
                  ) -> ImageNetData:
    """Read the installation at `root` with the paths of the config's `data` section.

    train_splits: the folder(s) to train on, e.g. ("extra", "train") for the annotator.
    Evaluation sets, each only if present: "imagenet" (val/, with "real" from data.real_json, else
    <root>/real.json, else timm's copy of the official file for real ImageNet; and "shankar" from
    data.shankar_json or <root>/shankar.json), and the three ImageNetV2 folders under data.v2_root (default
    <root>/v2)."""
    root = Path(root)
    wnids, names = read_classes(root)
    train = image_folder(root, train_splits, wnids)
    eval_sets = []
    if (root / "val").is_dir():
        val = image_folder(root, "val", wnids)
        label_sets = {}
        real = _first_existing(data_cfg.get("real_json"), root / "real.json",
                               timm_real_json() if data_cfg.get("source") == "imagenet" else None)
        shankar = _first_existing(data_cfg.get("shankar_json"), root / "shankar.json")
        for key, path in (("real", real), ("shankar", shankar)):
            if path is not None:
                label_sets[key] = read_label_sets(path, val)
        eval_sets.append(EvalSet("imagenet", val, label_sets))
    v2_root = Path(data_cfg.get("v2_root") or root / "v2")
    for name, folder in IMAGENET_V2.items():
        if (v2_root / folder).is_dir():
            eval_sets.append(EvalSet(name, integer_folder(v2_root / folder)))
    return ImageNetData(root, wnids, names, train, eval_sets)
