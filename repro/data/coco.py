"""COCO-format multi-label data (Table 10), read with pycocotools: COCO 2017's `instances_{train,val}2017.json` at
paper scale, the world's `detection/annotations/instances_{train,val}.json` at embedded scale, one reader;
`open_multilabel` gives both splits in the trainer's terms (multi-hot rows as the images' labels).

Each image's target is the multi-hot vector of the categories of its annotations (crowd ones included, as the
ASL-style COCO multi-label protocol counts them); images without annotations stay in, with an all-zero target.
Category index k is the k-th category in id order (COCO's 80 ids run 1-90 with gaps). Masks, for the oracle
label maps, are decoded on demand with pycocotools (`instance_masks`).
"""
from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

# source -> split -> (annotation file, image folder), relative to the data root
LAYOUTS = {"coco": {split: (f"annotations/instances_{split}2017.json", f"{split}2017") for split in ("train", "val")},
           "world": {split: (f"detection/annotations/instances_{split}.json", "detection") for split in ("train", "val")}}


@dataclass(frozen=True)
class MultiLabelImages:
    images_dir: Path
    relpaths: tuple[str, ...]     # file_name of each image, relative to images_dir
    image_ids: np.ndarray         # int64 [N], the annotation file's ids
    targets: np.ndarray           # uint8 [N, C] multi-hot
    category_index: dict          # category id -> its index k
    categories: tuple[str, ...]   # names, in category index order
    wnids: tuple[str, ...]        # the categories' wnids where the file gives them (the world's), else their names
    coco: object                  # the pycocotools COCO index, for masks

    def __len__(self) -> int:
        return len(self.relpaths)

    def path(self, index: int) -> Path:
        return self.images_dir / self.relpaths[index]


def read_coco(annotations: str | os.PathLike, images_dir: str | os.PathLike) -> MultiLabelImages:
    """The images of a COCO-format annotation file and their multi-hot targets; a missing file or image folder is
    one line naming it."""
    from pycocotools.coco import COCO

    annotations, images_dir = Path(annotations), Path(images_dir)
    for path, what in ((annotations, "annotation file"), (images_dir, "image folder")):
        if not path.exists():
            raise FileNotFoundError(f"COCO {what} {path} not found: COCO 2017 unpacks to annotations/"
                                    f"instances_{{train,val}}2017.json and {{train,val}}2017/")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco = COCO(str(annotations))
    category_ids = sorted(coco.getCatIds())
    index = {category: k for k, category in enumerate(category_ids)}
    image_ids = np.asarray(sorted(coco.getImgIds()), dtype=np.int64)
    targets = np.zeros((len(image_ids), len(category_ids)), dtype=np.uint8)
    for row, image_id in enumerate(image_ids):
        for annotation in coco.imgToAnns[int(image_id)]:
            targets[row, index[annotation["category_id"]]] = 1
    relpaths = tuple(coco.imgs[int(i)]["file_name"] for i in image_ids)
    names = tuple(coco.cats[c]["name"] for c in category_ids)
    wnids = tuple(coco.cats[c].get("wnid", coco.cats[c]["name"]) for c in category_ids)
    return MultiLabelImages(images_dir, relpaths, image_ids, targets, index, names, wnids, coco)


def multilabel_split(data: Mapping, root: str | os.PathLike, split: str) -> MultiLabelImages:
    """One split of a multi-label data spec (`repro.pipeline.multilabel_data_spec`) under its root."""
    annotations, images = LAYOUTS[data["source"]][split]
    return read_coco(Path(root) / annotations, Path(root) / images)


def open_multilabel(data: Mapping, root: str | os.PathLike):
    """Training images (multi-hot labels) and the val split as the evaluation set "coco" (scored by mAP), as
    `repro.data.imagenet.ImageNetData`; the two splits must share their categories."""
    from repro.data.folders import ImageList
    from repro.data.imagenet import EvalSet, ImageNetData

    train, val = (multilabel_split(data, root, split) for split in ("train", "val"))
    if train.wnids != val.wnids:
        raise ValueError(f"the multi-label train and val annotations under {root} have different categories "
                         f"({len(train.wnids)} and {len(val.wnids)}): use the two files of one release")
    return ImageNetData(root=Path(root), wnids=list(train.wnids), class_names=list(train.categories),
                        train=ImageList(train.images_dir, train.relpaths, train.targets),
                        eval_sets=[EvalSet("coco", ImageList(val.images_dir, val.relpaths, val.targets))],
                        skip_unreadable=bool(data.get("skip_unreadable")))


def instance_masks(images: MultiLabelImages, index: int) -> list[tuple[int, np.ndarray]]:
    """(category index, H x W bool mask) of every annotation of image `index`, decoded by pycocotools."""
    coco = images.coco
    return [(images.category_index[a["category_id"]], coco.annToMask(a).astype(bool))
            for a in coco.imgToAnns[int(images.image_ids[index])]]


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> dict:
    """mAP (%) over the classes with at least one positive (scikit-learn's average precision per class, macro), the
    per-class APs (None for a class without positives) and how many classes were skipped."""
    from sklearn.metrics import average_precision_score

    per_class = [100.0 * float(average_precision_score(targets[:, c], scores[:, c])) if targets[:, c].any() else None
                 for c in range(targets.shape[1])]
    scored = [ap for ap in per_class if ap is not None]
    return {"map": float(np.mean(scored)) if scored else float("nan"), "per_class_ap": per_class,
            "classes_without_positives": len(per_class) - len(scored)}
