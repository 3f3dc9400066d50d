"""Label-map storage: the official per-image format, the packed memory-mapped store, conversions and checks.

Official format (the released ImageNet maps): `<dir>/<wnid>/<stem>.pt`, a float tensor [2, k, H, W], row 0 the
top-k logits, row 1 the class ids as floats.

Packed store (a directory):
- `values.npy` [N, k, H, W]: float32 (fp32), float16 (fp16), or uint8 (int8, quantised per image:
  value = q * scale + offset, with `scales.npy` [N, 2] float32 holding (scale, offset); error <= scale / 2);
- `ids.npy` [N, k, H, W] uint16;
- `index.json`: the image paths in row order (relative to the data root, e.g. `train/<wnid>/<file>.JPEG`) and the
  settings (topk, grid, dtype, num_classes, the annotator's description).
Entries at each position are sorted by value, largest first, so a store with fewer classes per position is a
prefix along k (Table 6's top-k variants are derived, not regenerated).

`open_labelmaps(path)` reads either format through one API; images are looked up by their relative path, or by
`<wnid>/<stem>` (the official key) when the exact path is not stored.
"""
from __future__ import annotations

import json
import os
import shutil
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

import numpy as np
import torch
from numpy.lib.format import open_memmap

from repro.atomic import write_stream_atomic, write_text_atomic
from repro.imagefiles import list_images
from repro.pooling import global_pool_logits

FORMAT = "repro-labelmaps-packed"
VERSION = 1
INDEX, VALUES, IDS, SCALES = "index.json", "values.npy", "ids.npy", "scales.npy"
OFFICIAL_SETTINGS = "settings.json"
DTYPES = {"fp32": np.float32, "fp16": np.float16, "int8": np.uint8}
MAX_CLASSES = int(np.iinfo(np.uint16).max) + 1
FP16_MAX = float(np.finfo(np.float16).max)
DEFAULT_CLASSES = 1000
CHUNK = 4096  # rows per step when scanning or converting a store


class LabelMapError(ValueError):
    """Bad or inconsistent label maps; the message names the file or value."""


def official_key(relpath: str | os.PathLike) -> str:
    """`train/n01440764/n01440764_10026.JPEG` -> `n01440764/n01440764_10026`, the official file's key."""
    path = PurePosixPath(str(relpath).replace(os.sep, "/"))
    return f"{path.parent.name}/{path.stem}"


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise LabelMapError(f"unknown label-map dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    return dtype


def bytes_per_image(topk: int, grid: Sequence[int], dtype: str) -> int:
    cells = topk * grid[0] * grid[1]
    return cells * (np.dtype(DTYPES[dtype]).itemsize + 2) + (8 if dtype == "int8" else 0)


# ---- the official per-image format ----

def save_official(path: str | os.PathLike, values, ids) -> None:
    """One image's map as the released files store it: float tensor [2, k, H, W]."""
    tensor = torch.stack([torch.as_tensor(values, dtype=torch.float32), torch.as_tensor(ids).float()])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_stream_atomic(path, lambda file: torch.save(tensor, file))


def _load_official_tensor(path: str | os.PathLike) -> torch.Tensor:
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
    tensor = _load_official_tensor(path)
    return tensor[0].float(), tensor[1].round().long()


# ---- quantisation ----

def quantize_uint8(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image affine 8-bit codes [N, ...] and (scale, offset) [N, 2]; |value - decoded| <= scale / 2."""
    flat = values.reshape(len(values), -1).astype(np.float32)
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    scale = np.where(hi > lo, (hi - lo) / 255.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint((flat - lo[:, None]) / scale[:, None]), 0, 255).astype(np.uint8)
    return codes.reshape(values.shape), np.stack([scale, lo], axis=1).astype(np.float32)


def dequantize_uint8(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    shape = (len(codes),) + (1,) * (codes.ndim - 1)
    return codes.astype(np.float32) * scales[:, 0].reshape(shape) + scales[:, 1].reshape(shape)


# ---- writing packed stores ----

class PackedWriter:
    """Fills the arrays of a packed store in place (rows in any order); `finish` writes the index."""

    def __init__(self, directory: str | os.PathLike, num_images: int, topk: int, grid: Sequence[int],
                 dtype: str, resume: bool = False):
        self.directory = Path(directory)
        self.dtype = check_dtype(dtype)
        shape = (num_images, topk, *grid)
        if resume:
            self.values = open_memmap(self.directory / VALUES, mode="r+")
            self.ids = open_memmap(self.directory / IDS, mode="r+")
            self.scales = open_memmap(self.directory / SCALES, mode="r+") if dtype == "int8" else None
            if self.values.shape != shape or self.values.dtype != DTYPES[dtype]:
                raise LabelMapError(f"{self.directory / VALUES} is {self.values.shape} {self.values.dtype}, "
                                    f"expected {shape} {np.dtype(DTYPES[dtype])}")
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.values = open_memmap(self.directory / VALUES, mode="w+", dtype=DTYPES[dtype], shape=shape)
            self.ids = open_memmap(self.directory / IDS, mode="w+", dtype=np.uint16, shape=shape)
            self.scales = (open_memmap(self.directory / SCALES, mode="w+", dtype=np.float32,
                                       shape=(num_images, 2)) if dtype == "int8" else None)

    def write(self, start: int, values, ids) -> None:
        values = np.asarray(torch.as_tensor(values, dtype=torch.float32).cpu())
        ids = np.asarray(torch.as_tensor(ids).cpu())
        stop = start + len(values)
        if not np.isfinite(values).all():
            raise LabelMapError(f"non-finite label-map values in rows {start}..{stop - 1}")
        if ids.size and (ids.min() < 0 or ids.max() >= MAX_CLASSES):
            raise LabelMapError(f"class id {int(ids.max())} in rows {start}..{stop - 1} does not fit uint16")
        if self.dtype == "int8":
            codes, scales = quantize_uint8(values)
            self.values[start:stop] = codes
            self.scales[start:stop] = scales
        else:
            if self.dtype == "fp16" and values.size and np.abs(values).max() > FP16_MAX:
                raise LabelMapError(f"label-map value {np.abs(values).max():.4g} in rows {start}..{stop - 1} "
                                    f"overflows fp16")
            self.values[start:stop] = values
        self.ids[start:stop] = ids

    def flush(self) -> None:
        for array in (self.values, self.ids, self.scales):
            if array is not None:
                array.flush()

    def finish(self, paths: Sequence[str], settings: dict) -> None:
        if len(paths) != len(self.values):
            raise LabelMapError(f"{len(paths)} paths for {len(self.values)} rows")
        self.flush()
        index = {"format": FORMAT, "version": VERSION, **settings, "num_images": len(paths),
                 "topk": int(self.values.shape[1]), "grid": [int(s) for s in self.values.shape[2:]],
                 "dtype": self.dtype, "paths": list(paths)}
        # compact, unlike write_json_atomic's indented form: the index lists every image
        write_text_atomic(self.directory / INDEX, json.dumps(index))


def commit_dir(partial: Path, out_dir: Path, overwrite: bool) -> None:
    """Move a finished store into place (one rename; an existing store is replaced only with overwrite)."""
    if out_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{out_dir} exists; overwrite (--overwrite) replaces it")
        shutil.rmtree(out_dir)
    os.replace(partial, out_dir)


def write_packed(out_dir: str | os.PathLike, paths: Sequence[str], values, ids,
                 num_classes: int = DEFAULT_CLASSES, dtype: str = "fp32", annotator: dict | None = None,
                 overwrite: bool = False) -> Path:
    """A packed store from in-memory maps values/ids [N, k, H, W] (entries sorted largest first)."""
    values, ids = torch.as_tensor(values), torch.as_tensor(ids)
    _check_classes(ids, num_classes, out_dir)
    out_dir = Path(out_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    writer = PackedWriter(partial, len(paths), values.shape[1], values.shape[2:], dtype)
    writer.write(0, values, ids)
    writer.finish(paths, {"num_classes": num_classes, "annotator": annotator})
    commit_dir(partial, out_dir, overwrite)
    return out_dir


def _check_classes(ids: torch.Tensor, num_classes: int, where) -> None:
    if num_classes > MAX_CLASSES:
        raise LabelMapError(f"{num_classes} classes do not fit the uint16 ids of a packed store")
    if ids.numel() and int(ids.max()) >= num_classes:
        raise LabelMapError(f"{where}: class id {int(ids.max())} >= num_classes {num_classes}")


# ---- reading ----

def _as_rows(rows) -> np.ndarray:
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
        rows = np.arange(self.num_images) if rows is None else _as_rows(rows)
        classes, probabilities = [], []
        for start in range(0, len(rows), chunk):
            best = self.global_logits(rows[start:start + chunk]).softmax(dim=1).max(dim=1)
            classes.append(best.indices.numpy())
            probabilities.append(best.values.numpy())
        if not classes:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        return np.concatenate(classes), np.concatenate(probabilities)

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


class PackedLabelMaps(LabelMaps):
    format = "packed"

    def __init__(self, path: str | os.PathLike, num_classes: int | None = None):
        super().__init__()
        self.path = Path(path)
        index = self._load_index()
        self._paths = index.pop("paths")
        self.settings = index
        self.topk = int(index["topk"])
        self.grid = tuple(int(s) for s in index["grid"])
        self.dtype = check_dtype(index["dtype"])
        self.num_classes = int(num_classes or index.get("num_classes") or DEFAULT_CLASSES)
        self._count = int(index["num_images"])
        self._arrays = None
        self._pid = None

    def _load_index(self) -> dict:
        file = self.path / INDEX
        try:
            index = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise LabelMapError(f"cannot read {file}: {error}") from None
        if index.get("format") != FORMAT:
            raise LabelMapError(f"{file} is not a packed label-map index (format {index.get('format')!r})")
        return index

    @property
    def paths(self) -> list[str]:
        if self._paths is None:
            self._paths = self._load_index()["paths"]
        return self._paths

    @property
    def num_images(self) -> int:
        return self._count

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(values, ids, scales or None), memory-mapped read-only, opened once per process."""
        if self._arrays is None or self._pid != os.getpid():
            names = (VALUES, IDS, SCALES) if self.dtype == "int8" else (VALUES, IDS)
            values, ids, *scales = (self._open(name) for name in names)
            self._arrays, self._pid = (values, ids, scales[0] if scales else None), os.getpid()
        return self._arrays

    def _open(self, name: str) -> np.ndarray:
        try:
            return np.load(self.path / name, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise LabelMapError(f"cannot open {self.path / name}: {error}") from None

    def read(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        rows = _as_rows(rows)
        values, ids, scales = self.arrays()
        if self.dtype == "int8":
            out = dequantize_uint8(values[rows], np.asarray(scales[rows]))
        else:
            out = values[rows].astype(np.float32)
        return torch.from_numpy(out), torch.from_numpy(ids[rows].astype(np.int64))

    def __getstate__(self):
        state = super().__getstate__()
        state.update(_arrays=None, _pid=None, _paths=None)
        return state


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
        for row in _as_rows(rows):
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


class ConcatLabelMaps(LabelMaps):
    """Chosen rows of several stores read as one, e.g. a training set whose images come from two pools (Table 5's
    extra data). The parts must agree in grid, top-k, dtype and classes."""
    format = "concat"

    def __init__(self, parts: Sequence[tuple[LabelMaps, Sequence[int]]]):
        super().__init__()
        if not parts:
            raise LabelMapError("no label maps to concatenate")
        self.parts = [(maps, _as_rows(rows)) for maps, rows in parts]
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
        self._paths = [maps.paths[row] for maps, rows in self.parts for row in rows]

    @property
    def paths(self) -> list[str]:
        return self._paths

    def read(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        rows = _as_rows(rows)
        part_of = np.searchsorted(self._starts, rows, side="right") - 1
        values = torch.empty((len(rows), self.topk, *self.grid), dtype=torch.float32)
        ids = torch.empty((len(rows), self.topk, *self.grid), dtype=torch.int64)
        for part in np.unique(part_of):
            where = np.nonzero(part_of == part)[0]
            maps, source_rows = self.parts[part]
            values[where], ids[where] = maps.read(source_rows[rows[where] - self._starts[part]])
        return values, ids


def open_labelmaps(path: str | os.PathLike | LabelMaps, num_classes: int | None = None) -> LabelMaps:
    """A packed store (a directory with index.json) or an official directory (<wnid>/<stem>.pt files); label maps
    already open are returned as they are."""
    if isinstance(path, LabelMaps):
        return path
    path = Path(path)
    if not path.is_dir():
        raise LabelMapError(f"no label-map directory {path}")
    if (path / INDEX).exists():
        return PackedLabelMaps(path, num_classes)
    return OfficialLabelMaps(path, num_classes)


# ---- conversions ----

def _sorted_topk(values: torch.Tensor, ids: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    values, order = values.sort(dim=1, descending=True, stable=True)
    return values[:, :topk], ids.gather(1, order)[:, :topk]


def write_store(source: LabelMaps, out_dir: str | os.PathLike, topk: int | None = None, dtype: str | None = None,
                paths: Sequence[str] | None = None, transpose: bool = False, overwrite: bool = False) -> Path:
    """A packed store from any label maps, optionally keeping fewer classes per position (topk) or another
    dtype, under other image paths, or with each map's H and W swapped (transpose)."""
    topk = source.topk if topk is None else int(topk)
    dtype = check_dtype(dtype or source.dtype)
    if not 1 <= topk <= source.topk:
        raise LabelMapError(f"topk must be in 1..{source.topk} (the source's), got {topk}")
    paths = list(source.paths if paths is None else paths)
    if len(paths) != source.num_images:
        raise LabelMapError(f"{len(paths)} paths for {source.num_images} label maps")
    if source.num_classes > MAX_CLASSES:
        raise LabelMapError(f"{source.num_classes} classes do not fit the uint16 ids of a packed store")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; overwrite (--overwrite) replaces it")
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    grid = source.grid[::-1] if transpose else source.grid
    writer = PackedWriter(partial, source.num_images, topk, grid, dtype)
    for start in range(0, source.num_images, CHUNK):
        rows = np.arange(start, min(start + CHUNK, source.num_images))
        values, ids = source.read(rows)
        _check_classes(ids, source.num_classes, source.path)
        values, ids = _sorted_topk(values, ids, topk)
        if transpose:
            values, ids = values.transpose(2, 3), ids.transpose(2, 3)
        writer.write(start, values, ids)
    settings = {"num_classes": source.num_classes, "annotator": source.settings.get("annotator"),
                "input_size": source.settings.get("input_size"),
                "derived_from": {"path": str(source.path), "format": source.format, "topk": source.topk,
                                 "dtype": source.dtype}}
    writer.finish(paths, settings)
    commit_dir(partial, out_dir, overwrite)
    return out_dir


def derive_store(source: str | os.PathLike, out_dir: str | os.PathLike, topk: int | None = None,
                 dtype: str | None = None, overwrite: bool = False) -> Path:
    """Table 6's variants: a store keeping the top-k' <= k classes per position and/or another dtype."""
    return write_store(open_labelmaps(source), out_dir, topk=topk, dtype=dtype, overwrite=overwrite)


def official_to_packed(source: str | os.PathLike, out_dir: str | os.PathLike, dtype: str = "fp32",
                       topk: int | None = None, prefix: str = "train/", ext: str = ".JPEG", transpose: bool = False,
                       num_classes: int | None = None, overwrite: bool = False) -> Path:
    """Pack an official directory; image paths become prefix + <wnid>/<stem> + ext."""
    maps = open_labelmaps(source, num_classes)
    if maps.format != "official":
        raise LabelMapError(f"{source} is a packed store, not an official directory")
    paths = [f"{prefix}{key}{ext}" for key in maps.paths]
    return write_store(maps, out_dir, topk=topk, dtype=dtype, paths=paths, transpose=transpose,
                       overwrite=overwrite)


def packed_to_official(source: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write one <wnid>/<stem>.pt per image (fp32, as released) from a packed store."""
    maps = open_labelmaps(source)
    if maps.format != "packed":
        raise LabelMapError(f"{source} is an official directory, not a packed store")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; overwrite (--overwrite) replaces it")
    keys = [official_key(p) for p in maps.paths]
    if len(set(keys)) != len(keys):
        raise LabelMapError(f"{source}: two images share a <wnid>/<stem> key, the official layout cannot hold both")
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for start in range(0, maps.num_images, CHUNK):
        rows = np.arange(start, min(start + CHUNK, maps.num_images))
        values, ids = maps.read(rows)
        for row, v, i in zip(rows, values, ids):
            save_official(partial / f"{keys[row]}.pt", v, i)
    settings = {k: maps.settings.get(k) for k in ("num_classes", "annotator", "input_size")}
    write_text_atomic(partial / OFFICIAL_SETTINGS, json.dumps(settings))
    commit_dir(partial, out_dir, overwrite)
    return out_dir


# ---- verification ----

def _check_rows(values: np.ndarray, ids: np.ndarray, scales: np.ndarray | None,
                num_classes: int) -> list[tuple[int, str]]:
    """Problems of one chunk of rows, as (row offset, message) pairs."""
    problems = []
    if scales is not None:
        bad = ~(np.isfinite(scales).all(axis=1) & (scales[:, 0] > 0))
        problems += [(int(r), "bad quantisation scale") for r in np.flatnonzero(bad)]
    else:
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        problems += [(int(r), "non-finite values") for r in np.flatnonzero(bad)]
    flat_ids = ids.reshape(len(ids), ids.shape[1], -1)
    bad = (flat_ids.max(axis=(1, 2)) >= num_classes) | (flat_ids.min(axis=(1, 2)) < 0)
    problems += [(int(r), f"class id >= {num_classes} or < 0") for r in np.flatnonzero(bad)]
    ordered = np.sort(flat_ids, axis=1)
    bad = (ordered[:, 1:] == ordered[:, :-1]).any(axis=(1, 2))
    problems += [(int(r), "a class repeated at one position") for r in np.flatnonzero(bad)]
    return problems


def _verify_packed(maps: PackedLabelMaps, problems: list[str]) -> None:
    if len(maps.paths) != maps.num_images:
        problems.append(f"{maps.path / INDEX}: {len(maps.paths)} paths for {maps.num_images} images")
    if len(set(maps.paths)) != len(maps.paths):
        problems.append(f"{maps.path / INDEX}: repeated image paths")
    try:
        values, ids, scales = maps.arrays()
    except LabelMapError as error:
        problems.append(str(error))
        return
    shape = (maps.num_images, maps.topk, *maps.grid)
    for name, array, dtype, want in ((VALUES, values, DTYPES[maps.dtype], shape), (IDS, ids, np.uint16, shape),
                                     (SCALES, scales, np.float32, (maps.num_images, 2))):
        if array is not None and (array.shape != want or array.dtype != dtype):
            problems.append(f"{maps.path / name}: {array.shape} {array.dtype}, expected {want} {np.dtype(dtype)}")
    if problems:
        return
    for start in range(0, maps.num_images, CHUNK):
        stop = min(start + CHUNK, maps.num_images)
        chunk_scales = None if scales is None else np.asarray(scales[start:stop])
        for offset, message in _check_rows(np.asarray(values[start:stop]), np.asarray(ids[start:stop]),
                                           chunk_scales, maps.num_classes):
            problems.append(f"{maps.paths[start + offset]} (row {start + offset}): {message}")


def _verify_official(maps: OfficialLabelMaps, problems: list[str]) -> None:
    shape = (2, maps.topk, *maps.grid)
    for row in range(maps.num_images):
        file = maps.file(row)
        try:
            tensor = _load_official_tensor(file)
        except LabelMapError as error:
            problems.append(str(error))
            continue
        if tuple(tensor.shape) != shape:
            problems.append(f"{file}: {tuple(tensor.shape)}, expected {shape} like the others")
            continue
        if not torch.equal(tensor[1], tensor[1].round()):
            problems.append(f"{file}: class ids are not whole numbers")
        problems += [f"{file}: {message}" for _, message in
                     _check_rows(tensor[None, 0].numpy(), tensor[None, 1].round().long().numpy(), None,
                                 maps.num_classes)]


def verify(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
           splits: Sequence[str] = ("train",), num_classes: int | None = None,
           raise_on_failure: bool = True) -> dict:
    """Check a store: array shapes and dtypes, class ids < num_classes, finite values, no class repeated at a
    position, and (with image_root) a map for every image under image_root/<split>. Returns a report
    (`ok`, `problems`, sizes); raises LabelMapError listing the first problems unless raise_on_failure is False."""
    maps = open_labelmaps(path, num_classes)
    problems: list[str] = []
    if isinstance(maps, PackedLabelMaps):
        _verify_packed(maps, problems)
    else:
        _verify_official(maps, problems)
    report = maps.describe()
    if image_root is not None:
        images = [p for split in splits for p in list_images(image_root, split)]
        rows = [maps.find(p) for p in images]
        missing = [p for p, row in zip(images, rows) if row < 0]
        problems += [f"no label map for image {p}" for p in missing]
        report.update(images=len(images), missing=len(missing), extra=maps.num_images - len(set(rows) - {-1}))
    report.update(ok=not problems, problems=problems)
    if problems and raise_on_failure:
        shown = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise LabelMapError(f"{path}: {len(problems)} problem(s): {shown}{more}")
    return report
