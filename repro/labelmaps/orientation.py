"""Which way round stored label maps are, [k, H, W] or [k, W, H], measured against the training images' boxes.

The official training code hands RoIAlign (y1, x1, y2, x2) where it reads (x1, y1, x2, y2), so either the released
maps are stored [k, W, H] or that code pooled every crop's box mirrored about the diagonal (`labelmap.transpose`
reads them the official code's way). The boxes decide: an annotator's map of an image's own class is high on the
object. Per image, the labelled class's probability at each cell (softmax over the k stored logits, that class's
share where it is among the k ids, else 0) is averaged over the cells whose centres lie inside the union of the
image's boxes of its class and over the rest; the contrast inside - outside is taken with the map read as stored
([H, W]: rows are y) and transposed ([W, H]). The orientation with the larger contrast on significantly more
images wins: a two-sided sign test over images, ties dropped, at p < SIGNIFICANCE.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from scipy.stats import binomtest
from tqdm import tqdm

from repro.data.localisation import read_loc_solution
from repro.imagefiles import list_images
from repro.labelmaps.errors import LabelMapError
from repro.labelmaps.maps import CHUNK, LabelMaps, official_key

SIGNIFICANCE = 0.01
AS_STORED, TRANSPOSED = "[k, H, W]", "[k, W, H]"
VERDICTS = {AS_STORED: "maps are [k, H, W]: keep labelmap.transpose=false",
            TRANSPOSED: "maps are [k, W, H]: set labelmap.transpose=true"}
UNDECIDED = "undecided"
RULE = (f"two-sided sign test over images of contrast {AS_STORED} - contrast {TRANSPOSED} (ties dropped), "
        f"decided at p < {SIGNIFICANCE}")


@dataclass(frozen=True)
class OrientationReport:
    """Per used image (sorted by <wnid>/<stem>): the mean probability of its labelled class inside and outside its
    boxes, [images, 2] each, column 0 with the map as stored and column 1 transposed."""
    keys: list[str]
    inside: np.ndarray
    outside: np.ndarray
    candidates: int  # images with a map and boxes of their class (before --limit)
    skipped: int     # of those taken, images whose boxes hold no cell centre or every one

    @property
    def contrast(self) -> np.ndarray:
        return self.inside - self.outside

    @property
    def wins(self) -> tuple[int, int]:
        """(images where the stored orientation has the larger contrast, images where the transposed one has)."""
        difference = self.contrast[:, 0] - self.contrast[:, 1]
        return int((difference > 0).sum()), int((difference < 0).sum())

    @property
    def p_value(self) -> float:
        stored, transposed = self.wins
        return float(binomtest(stored, stored + transposed).pvalue) if stored + transposed else 1.0

    @property
    def winner(self) -> str | None:
        if self.p_value >= SIGNIFICANCE:
            return None
        stored, transposed = self.wins
        return AS_STORED if stored > transposed else TRANSPOSED

    @property
    def verdict(self) -> str:
        return VERDICTS[self.winner] if self.winner else UNDECIDED

    def lines(self) -> list[str]:
        stored, transposed = self.wins
        decided = stored + transposed
        out = [f"images: {len(self.keys)} of {self.candidates} with a map and boxes of their class "
               f"({self.skipped} skipped: their boxes cover no cell centre or all of them)"]
        for column, name in enumerate((f"{AS_STORED} (as stored)", f"{TRANSPOSED} (transposed)")):
            out.append(f"{name}: inside {self.inside[:, column].mean():.4f}, outside "
                       f"{self.outside[:, column].mean():.4f}, contrast {self.contrast[:, column].mean():+.4f}")
        share = f"{100.0 * stored / decided:.1f}%" if decided else "n/a"
        out.append(f"{AS_STORED} beats {TRANSPOSED} on {share} of {decided} images ({len(self.keys) - decided} "
                   f"ties); sign test p = {self.p_value:.3g}")
        out.append(f"rule: {RULE}")
        out.append(f"verdict: {self.verdict}")
        return out


def labelled_class_probability(values: torch.Tensor, ids: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """[B, H, W]: each image's class `classes[b]` share of the softmax over the k stored logits at each cell."""
    own = ids == classes[:, None, None, None]
    return (values.float().softmax(dim=1) * own).sum(dim=1)


def cells_inside(boxes: np.ndarray, grid: tuple[int, int], width: int, height: int) -> np.ndarray:
    """bool [rows, columns]: the cells of a grid over the whole image whose centres lie in some box (pixels
    x1, y1, x2, y2); rows run along y."""
    rows, columns = grid
    y = (np.arange(rows) + 0.5) * height / rows
    x = (np.arange(columns) + 0.5) * width / columns
    in_y = (boxes[:, 1, None] <= y) & (y <= boxes[:, 3, None])  # [boxes, rows]
    in_x = (boxes[:, 0, None] <= x) & (x <= boxes[:, 2, None])
    return (in_y[:, :, None] & in_x[:, None, :]).any(axis=0)


def _class_boxes(maps: LabelMaps, boxes_csv: Path) -> list[tuple[str, int, np.ndarray]]:
    """(key <wnid>/<stem>, row, boxes of the folder's class [n, 4]) of every map with boxes of its class, sorted."""
    solution = read_loc_solution(boxes_csv)
    chosen = []
    for row, path in enumerate(maps.paths):
        key = PurePosixPath(official_key(path))
        own = [box for wnid, box in solution.get(key.name, []) if wnid == key.parent.name]
        if own:
            chosen.append((str(key), row, np.array(own, dtype=np.float64)))
    if not chosen:
        raise LabelMapError(f"no image of {maps.path} ({maps.num_images} maps, e.g. {official_key(maps.paths[0])}) "
                            f"has boxes of its class in {boxes_csv} ({len(solution)} images)")
    return sorted(chosen, key=lambda item: item[0])


def _class_index(class_of: dict[str, int], key: str, image_root: Path) -> int:
    wnid = PurePosixPath(key).parent.name
    if wnid not in class_of:
        raise LabelMapError(f"the map of {key} names class {wnid}, which is not a class of {image_root}")
    return class_of[wnid]


def check_orientation(maps: LabelMaps, boxes_csv: str | os.PathLike, image_root: str | os.PathLike,
                      limit: int | None = None, progress: bool = False) -> OrientationReport:
    """Measure the orientation of `maps` on the training images under `image_root`/train that have boxes of their
    class in `boxes_csv` (ImageNet's LOC_train_solution.csv); the first `limit` of them by key, if given."""
    boxes_csv, image_root = Path(boxes_csv), Path(image_root)
    if not boxes_csv.is_file():
        raise FileNotFoundError(f"no boxes file {boxes_csv}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    from repro.data.folders import read_classes  # repro.data imports the label-map reader: imported late

    chosen = _class_boxes(maps, boxes_csv)
    candidates = len(chosen)
    chosen = chosen[:limit]
    images = {official_key(relpath): relpath for relpath in list_images(image_root, "train")}
    class_of = {wnid: c for c, wnid in enumerate(read_classes(image_root)[0])}
    keys, inside, outside = [], [], []
    skipped = 0
    bar = tqdm(total=len(chosen), unit="img", desc="orientation", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(chosen), CHUNK):
        part = chosen[start:start + CHUNK]
        values, ids = maps.read([row for _, row, _ in part])
        classes = torch.tensor([_class_index(class_of, key, image_root) for key, _, _ in part])
        probabilities = labelled_class_probability(values, ids, classes).numpy()
        for (key, _, boxes), probability in zip(part, probabilities):
            relpath = images.get(key)
            if relpath is None:
                raise FileNotFoundError(f"no image file for {key} under {image_root / 'train'}")
            try:
                with Image.open(image_root / relpath) as image:  # reads the header only
                    width, height = image.size
            except OSError as error:
                raise LabelMapError(f"cannot read the size of {image_root / relpath}: {error}") from None
            views = (probability, probability.T)
            masks = [cells_inside(boxes, view.shape, width, height) for view in views]
            if any(mask.all() or not mask.any() for mask in masks):
                skipped += 1
            else:
                keys.append(key)
                inside.append([view[mask].mean() for view, mask in zip(views, masks)])
                outside.append([view[~mask].mean() for view, mask in zip(views, masks)])
            bar.update()
    bar.close()
    if not keys:
        raise LabelMapError(f"all {len(chosen)} images' boxes hold no cell centre of the {maps.grid} grid or all "
                            f"of them: nothing to compare")
    return OrientationReport(keys, np.array(inside), np.array(outside), candidates, skipped)
