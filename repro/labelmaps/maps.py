"""What every label-map reader offers (`LabelMaps`), several readers' rows read as one (`ConcatLabelMaps`), and a
reader's maps with H and W swapped (`TransposedLabelMaps`, config key `labelmap.transpose`).

Images are looked up by their path relative to the data root (`train/<wnid>/<file>.JPEG`), or by `<wnid>/<stem>`
(the official key) when the exact path is not stored.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

import numpy as np
import torch

from repro.labelmaps.errors import LabelMapError
from repro.labelmaps.quantize import bytes_per_image
from repro.pooling import global_pool_logits

DEFAULT_CLASSES = 1000
CHUNK = 4096  # rows per step when scanning or converting a store


def official_key(relpath: str | os.PathLike) -> str:
    """`train/n01440764/n01440764_10026.JPEG` -> `n01440764/n01440764_10026`, the official file's key."""
    path = PurePosixPath(str(relpath).replace(os.sep, "/"))
    return f"{path.parent.name}/{path.stem}"


def check_maps_read(values: np.ndarray, ids: np.ndarray, num_classes: int, name_of) -> None:
    """Raises LabelMapError naming the first image (`name_of(i)` for the i-th map read) whose values are not
    finite or whose class ids are out of 0..num_classes-1: every read is checked, at a cost far below the read's."""
    flat_values, flat_ids = values.reshape(len(values), -1), ids.reshape(len(ids), -1)
    bad = ~np.isfinite(flat_values).all(axis=1)
    if bad.any():
        raise LabelMapError(f"label map of {name_of(int(np.flatnonzero(bad)[0]))} has non-finite values: "
                            f"regenerate or repair it (python -m repro labelmaps verify lists every damaged map)")
    bad = (flat_ids.max(axis=1, initial=0) >= num_classes) | (flat_ids.min(axis=1, initial=0) < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise LabelMapError(f"label map of {name_of(i)} has class id {int(flat_ids[i].max())} outside "
                            f"0..{num_classes - 1} (it is read for {num_classes} classes): use maps made for "
                            f"these classes")


def as_rows(rows) -> np.ndarray:
    """Row indices (an int, a sequence, an array or a tensor) as an int64 array [B]."""
    if isinstance(rows, torch.Tensor):
        rows = rows.cpu().numpy()
    return np.atleast_1d(np.asarray(rows, dtype=np.int64))


class LabelMaps(ABC):
    """Top-k label maps of a set of images. Picklable: workers reopen files lazily, once per process."""

    format: str
    path: Path
    topk: int
    grid: tuple[int, int]
    dtype: str
    num_classes: int
    settings: dict

    def __init__(self):
        self._lookup = None

    @property
    @abstractmethod
    def paths(self) -> list[str]:
        """Image paths in row order (packed) or <wnid>/<stem> keys (official)."""

    @property
    def num_images(self) -> int:
        return len(self.paths)

    def __len__(self) -> int:
        return self.num_images

    def _rows_by_name(self) -> tuple[dict, dict]:
        if self._lookup is None:
            exact = {p: i for i, p in enumerate(self.paths)}
            keys: dict[str, int] = {}
            for i, p in enumerate(self.paths):
                key = official_key(p)
                keys[key] = -1 if key in keys else i  # -1: ambiguous key, exact path required
            self._lookup = exact, keys
        return self._lookup

    def find(self, relpath: str) -> int:
        """The row of an image, or -1 when absent."""
        exact, keys = self._rows_by_name()
        row = exact.get(relpath)
        return row if row is not None else keys.get(official_key(relpath), -1)

    def row_of(self, relpath: str) -> int:
        row = self.find(relpath)
        if row < 0:
            raise KeyError(f"no label map for {relpath} in {self.path}")
        return row

    def rows_for(self, relpaths: Iterable[str]) -> np.ndarray:
        return np.array([self.row_of(p) for p in relpaths], dtype=np.int64)

    def __contains__(self, relpath: str) -> bool:
        return self.find(relpath) >= 0

    @abstractmethod
    def read(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        """(values float32 [B, k, H, W], ids int64 [B, k, H, W]) for rows."""

    def global_logits(self, rows) -> torch.Tensor:
        """Whole-image class scores [B, C]: the map averaged over positions (zeros outside the top-k)."""
        return global_pool_logits(*self.read(rows), self.num_classes)

    def whole_image_top1(self, rows=None, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """The annotator's whole-image prediction for rows (default: all), read chunk by chunk: each row's top-1
        class of the map averaged over positions, and that class's softmax probability."""
        rows = np.arange(self.num_images) if rows is None else as_rows(rows)
        classes, probabilities = [], []
        for start in range(0, len(rows), chunk):
            best = self.global_logits(rows[start:start + chunk]).softmax(dim=1).max(dim=1)
            classes.append(best.indices.numpy())
            probabilities.append(best.values.numpy())
        if not classes:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        classes, probabilities = np.concatenate(classes), np.concatenate(probabilities)
        blank = np.isin(rows, self.skipped_rows)
        classes[blank], probabilities[blank] = -1, 0.0  # no analysis may count an image nobody could read
        return classes, probabilities

    @property
    def skipped_rows(self) -> np.ndarray:
        """Rows of images the annotator's pass could not read under `data.skip_unreadable`: blank maps, which
        `whole_image_top1` marks class -1 (agreeing with no label, chosen by no subsample)."""
        return np.array(sorted(int(row) for row, _ in self.settings.get("skipped", [])), dtype=np.int64)

    @property
    def bytes_per_image(self) -> int:
        return bytes_per_image(self.topk, self.grid, self.dtype)

    def describe(self) -> dict:
        return {"path": str(self.path), "format": self.format, "num_images": self.num_images, "topk": self.topk,
                "grid": list(self.grid), "dtype": self.dtype, "num_classes": self.num_classes,
                "bytes_per_image": self.bytes_per_image,
                "total_bytes": self.bytes_per_image * self.num_images,
                "annotator": self.settings.get("annotator")}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_lookup"] = None
        return state


class ConcatLabelMaps(LabelMaps):
    """Chosen rows of several stores read as one, e.g. a training set whose images come from two pools (Table 5's
    extra data). The parts must agree in grid, top-k, dtype and classes. `paths` names the image of each row, in
    order: the stores' own names may collide (a released store names its rows <wnid>/<stem>, and a pool's file of
    a training image's name has the same key)."""
    format = "concat"

    def __init__(self, parts: Sequence[tuple[LabelMaps, Sequence[int]]], paths: Sequence[str]):
        super().__init__()
        if not parts:
            raise LabelMapError("no label maps to concatenate")
        self.parts = [(maps, as_rows(rows)) for maps, rows in parts]
        first = self.parts[0][0]

        def shape(maps):
            return maps.grid, maps.topk, maps.dtype, maps.num_classes

        for maps, _ in self.parts[1:]:
            if shape(maps) != shape(first):
                raise LabelMapError(f"{maps.path} (grid, top-k, dtype, classes = {shape(maps)}) does not match "
                                    f"{first.path} ({shape(first)})")
        self.path, self.settings = first.path, first.settings
        self.grid, self.topk, self.dtype, self.num_classes = shape(first)
        self._starts = np.cumsum([0] + [len(rows) for _, rows in self.parts])
        if len(paths) != self._starts[-1]:
            raise LabelMapError(f"{len(paths)} image paths for {self._starts[-1]} rows of label maps")
        self._paths = list(paths)

    @property
    def paths(self) -> list[str]:
        return self._paths

    @property
    def skipped_rows(self) -> np.ndarray:
        return np.flatnonzero(np.concatenate([np.isin(rows, maps.skipped_rows) for maps, rows in self.parts]))

    def read(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        rows = as_rows(rows)
        part_of = np.searchsorted(self._starts, rows, side="right") - 1
        values = torch.empty((len(rows), self.topk, *self.grid), dtype=torch.float32)
        ids = torch.empty((len(rows), self.topk, *self.grid), dtype=torch.int64)
        for part in np.unique(part_of):
            where = np.nonzero(part_of == part)[0]
            maps, source_rows = self.parts[part]
            values[where], ids[where] = maps.read(source_rows[rows[where] - self._starts[part]])
        return values, ids


class TransposedLabelMaps(LabelMaps):
    """Another reader's maps with H and W swapped at every read ([k, H, W] -> [k, W, H]): the student's view under
    `labelmap.transpose`, for maps stored [k, W, H]. Pooling these over a box equals pooling the stored maps over
    the box mirrored about the diagonal, which is what the official training code does."""

    def __init__(self, maps: LabelMaps):
        super().__init__()
        self.maps = maps
        self.format, self.path, self.settings = maps.format, maps.path, maps.settings
        self.topk, self.dtype, self.num_classes = maps.topk, maps.dtype, maps.num_classes
        self.grid = maps.grid[::-1]

    @property
    def paths(self) -> list[str]:
        return self.maps.paths

    @property
    def num_images(self) -> int:
        return self.maps.num_images

    def read(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        values, ids = self.maps.read(rows)
        return values.transpose(-2, -1), ids.transpose(-2, -1)

    @property
    def bytes_per_image(self) -> int:
        return self.maps.bytes_per_image

    def describe(self) -> dict:
        return {**super().describe(), "transposed": True}
