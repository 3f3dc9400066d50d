"""The official format (the released ImageNet maps): `<dir>/<wnid>/<stem>.pt`, a float tensor [2, k, H, W], row 0
the top-k logits, row 1 the class ids as floats; `settings.json` beside them holds the settings of maps made here.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from repro.atomic import write_stream_atomic
from repro.labelmaps.errors import LabelMapError
from repro.labelmaps.maps import DEFAULT_CLASSES, LabelMaps, as_rows, check_maps_read
from repro.labelmaps.packed import INDEX

OFFICIAL_SETTINGS = "settings.json"
SHAPE_SAMPLE = 9  # files read to find the maps' shape where settings.json does not declare it


def save_official(path: str | os.PathLike, values, ids) -> None:
    """One image's map as the released files store it: float tensor [2, k, H, W]."""
    tensor = torch.stack([torch.as_tensor(values, dtype=torch.float32), torch.as_tensor(ids).float()])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_stream_atomic(path, lambda file: torch.save(tensor, file))


def load_official_tensor(path: str | os.PathLike) -> torch.Tensor:
    try:
        tensor = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise LabelMapError(f"cannot read label map {path}: {error}") from None
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4 or tensor.shape[0] != 2:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise LabelMapError(f"label map {path} is {shape}, expected a tensor [2, k, H, W]")
    return tensor


def load_official(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """(values float32 [k, H, W], ids int64 [k, H, W]) from one official file."""
    tensor = load_official_tensor(path)
    return tensor[0].float(), tensor[1].round().long()


class OfficialLabelMaps(LabelMaps):
    format = "official"
    dtype = "fp32"

    def __init__(self, path: str | os.PathLike, num_classes: int | None = None):
        super().__init__()
        self.path = Path(path)
        self._keys = sorted(f"{p.parent.name}/{p.stem}" for p in self.path.glob("*/*.pt"))
        if not self._keys:
            raise LabelMapError(f"no label maps in {self.path}: expected {INDEX} (packed) or <wnid>/<stem>.pt files")
        settings_file = self.path / OFFICIAL_SETTINGS
        self.settings = json.loads(settings_file.read_text()) if settings_file.exists() else {}
        self.topk, *grid = self._declared_shape()
        self.grid = tuple(grid)
        self.num_classes = int(num_classes or self.settings.get("num_classes") or DEFAULT_CLASSES)

    def _declared_shape(self) -> tuple[int, ...]:
        """(k, H, W) of every map: from settings.json where the maps were made here, else the shape most of
        SHAPE_SAMPLE files spread over the store agree on (so one damaged file cannot set it)."""
        if "topk" in self.settings and "grid" in self.settings:
            self.shape_source = f"as {self.path / OFFICIAL_SETTINGS} declares"
            return (int(self.settings["topk"]), *(int(s) for s in self.settings["grid"]))
        rows = np.unique(np.linspace(0, len(self._keys) - 1, SHAPE_SAMPLE).round().astype(int))
        shapes = Counter()
        for row in rows:
            try:
                shapes[tuple(load_official_tensor(self.file(row)).shape[1:])] += 1
            except LabelMapError:
                continue
        if not shapes:
            raise LabelMapError(f"none of {len(rows)} label maps sampled in {self.path} can be read: check the "
                                f"folder (python -m repro labelmaps verify {self.path})")
        shape, count = shapes.most_common(1)[0]
        self.shape_source = f"like {count} of {len(rows)} files sampled"
        return shape

    @property
    def paths(self) -> list[str]:
        return self._keys

    def file(self, row: int) -> Path:
        return self.path / f"{self._keys[row]}.pt"

    def read(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        values, ids = [], []
        for row in as_rows(rows):
            v, i = load_official(self.file(row))
            if tuple(v.shape) != (self.topk, *self.grid):
                raise LabelMapError(f"label map {self.file(row)} is {tuple(v.shape)}, expected "
                                    f"{(self.topk, *self.grid)} ({self.shape_source}): regenerate or replace it")
            check_maps_read(v[None].numpy(), i[None].numpy(), self.num_classes, lambda _: str(self.file(row)))
            values.append(v)
            ids.append(i)
        return torch.stack(values), torch.stack(ids)

    @property
    def bytes_per_image(self) -> int:
        return 2 * self.topk * self.grid[0] * self.grid[1] * 4
