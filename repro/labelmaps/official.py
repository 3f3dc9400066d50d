"""The official format (the released ImageNet maps): `<dir>/<wnid>/<stem>.pt`, a float tensor [2, k, H, W], row 0
the top-k logits, row 1 the class ids as floats; `settings.json` beside them holds the settings of maps made here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from repro.atomic import write_stream_atomic
from repro.labelmaps.errors import LabelMapError
from repro.labelmaps.maps import DEFAULT_CLASSES, LabelMaps, as_rows
from repro.labelmaps.packed import INDEX

OFFICIAL_SETTINGS = "settings.json"


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
        values, _ = load_official(self.file(0))
        self.topk = values.shape[0]
        self.grid = tuple(values.shape[1:])
        self.num_classes = int(num_classes or self.settings.get("num_classes") or DEFAULT_CLASSES)

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
                                    f"{(self.topk, *self.grid)} like the others")
            values.append(v)
            ids.append(i)
        return torch.stack(values), torch.stack(ids)

    @property
    def bytes_per_image(self) -> int:
        return 2 * self.topk * self.grid[0] * self.grid[1] * 4
