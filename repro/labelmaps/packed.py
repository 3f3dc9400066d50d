"""The packed store (a directory), written in place and read memory-mapped:
- `values.npy` [N, k, H, W]: float32 (fp32), float16 (fp16), or uint8 (int8, with `scales.npy` [N, 2] float32
  holding each image's (scale, offset); see repro.labelmaps.quantize);
- `ids.npy` [N, k, H, W] uint16;
- or, for dtype compact, `records.bin`, `rows.npy` and `scales.npy`: one zlib record per image (see
  repro.labelmaps.compact);
- `index.json`: the image paths in row order (relative to the data root, e.g. `train/<wnid>/<file>.JPEG`) and the
  settings (topk, grid, dtype, num_classes, the annotator's description).
Entries at each position are sorted by value, largest first, so a store with fewer classes per position is a
prefix along k (Table 6's top-k variants are derived, not regenerated).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from numpy.lib.format import open_memmap

from repro.atomic import write_text_atomic
from repro.labelmaps import compact
from repro.labelmaps.errors import LabelMapError
from repro.labelmaps.maps import DEFAULT_CLASSES, LabelMaps, as_rows, check_maps_read
from repro.labelmaps.progress import partial_dir
from repro.labelmaps.quantize import DTYPES, FP16_MAX, check_dtype, dequantize_uint8, quantize_uint8

FORMAT = "repro-labelmaps-packed"
VERSION = 1
INDEX, VALUES, IDS, SCALES = "index.json", "values.npy", "ids.npy", "scales.npy"
MAX_CLASSES = int(np.iinfo(np.uint16).max) + 1


class PackedWriter:
    """Fills the arrays of a packed store in place (rows in any order); `finish` writes the index. With `resume`,
    continues a partial store; `done`, where known, is how many leading rows are complete (a compact store drops
    what was appended after them)."""

    def __init__(self, directory: str | os.PathLike, num_images: int, topk: int, grid: Sequence[int],
                 dtype: str, resume: bool = False, done: int | None = None):
        self.directory = Path(directory)
        self.dtype = check_dtype(dtype)
        shape = (num_images, topk, *grid)
        self.shape = shape
        self.records = self.values = self.ids = self.scales = None
        if dtype == "compact":
            self.records = compact.RecordWriter(self.directory, num_images, resume, done)
        elif resume:
            self.values = open_memmap(self.directory / VALUES, mode="r+")
            self.ids = open_memmap(self.directory / IDS, mode="r+")
            self.scales = open_memmap(self.directory / SCALES, mode="r+") if dtype == "int8" else None
            if self.values.shape != shape or self.values.dtype != DTYPES[dtype]:
                raise LabelMapError(f"{self.directory / VALUES} is {self.values.shape} {self.values.dtype}, "
                                    f"expected {shape} {np.dtype(DTYPES[dtype])}")
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.values = _reserved_memmap(self.directory / VALUES, DTYPES[dtype], shape)
            self.ids = _reserved_memmap(self.directory / IDS, np.uint16, shape)
            self.scales = _reserved_memmap(self.directory / SCALES, np.float32, (num_images, 2)) \
                if dtype == "int8" else None

    def write(self, start: int, values, ids) -> None:
        values = np.asarray(torch.as_tensor(values, dtype=torch.float32).cpu())
        ids = np.asarray(torch.as_tensor(ids).cpu())
        stop = start + len(values)
        if not np.isfinite(values).all():
            raise LabelMapError(f"non-finite label-map values in rows {start}..{stop - 1}")
        if ids.size and (ids.min() < 0 or ids.max() >= MAX_CLASSES):
            raise LabelMapError(f"class id {int(ids.max())} in rows {start}..{stop - 1} does not fit uint16")
        if self.records is not None:
            self.records.write(start, values, ids)
            return
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
        for array in (self.values, self.ids, self.scales, self.records):
            if array is not None:
                array.flush()

    def finish(self, paths: Sequence[str], settings: dict) -> None:
        if len(paths) != self.shape[0]:
            raise LabelMapError(f"{len(paths)} paths for {self.shape[0]} rows")
        self.flush()
        if self.records is not None:
            self.records.close()
            settings = {**settings, "value_bits": compact.VALUE_BITS}
        index = {"format": FORMAT, "version": VERSION, **settings, "num_images": len(paths),
                 "topk": int(self.shape[1]), "grid": [int(s) for s in self.shape[2:]],
                 "dtype": self.dtype, "paths": list(paths)}
        # compact, unlike write_json_atomic's indented form: the index lists every image
        write_text_atomic(self.directory / INDEX, json.dumps(index))


def _reserved_memmap(path: Path, dtype, shape: tuple) -> np.memmap:
    """A new array file memory-mapped, its disk space taken at once: the file is sparse, and a write into the map
    that meets a full disk later kills the process by SIGBUS, with no message and hours into a pass."""
    array = open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    if not hasattr(os, "posix_fallocate"):  # macOS
        return array
    with open(path, "r+b") as file:
        size = os.fstat(file.fileno()).st_size
        try:
            os.posix_fallocate(file.fileno(), 0, size)
        except OSError as error:
            if error.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # a filesystem without it
                return array
            raise LabelMapError(f"cannot take {size / 1e9:.2f} GB for {path}: {error.strerror}; free space on "
                                "that disk or put the run cache (--runs) elsewhere") from None
    return array


def commit_dir(partial: Path, out_dir: Path, overwrite: bool) -> None:
    """Move a finished store into place (one rename; an existing store is replaced only with overwrite)."""
    if out_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{out_dir} exists; overwrite (--overwrite) replaces it")
        shutil.rmtree(out_dir)
    os.replace(partial, out_dir)


def concatenate_packed(parts: Sequence[Path], out_dir: Path, settings: dict, rows_per_copy: int = 8192) -> Path:
    """One packed store of the rows of `parts` in order (the shares of a pass split over ranks), their arrays copied
    as stored (the bytes each share wrote, a chunk at a time), with `settings` and every part's paths in its index."""
    stores = [PackedLabelMaps(part) for part in parts]
    first = stores[0]
    for store in stores:
        if (store.topk, store.grid, store.dtype) != (first.topk, first.grid, first.dtype) or store.dtype == "compact":
            raise LabelMapError(f"{store.path} ({store.topk}, {store.grid}, {store.dtype}) cannot join {first.path} "
                                f"({first.topk}, {first.grid}, {first.dtype})")
    paths = [path for store in stores for path in store.paths]
    partial = partial_dir(out_dir)
    shutil.rmtree(partial, ignore_errors=True)
    writer = PackedWriter(partial, len(paths), first.topk, first.grid, first.dtype)
    start = 0
    for store in stores:
        arrays = store.arrays()
        for row in range(0, store.num_images, rows_per_copy):
            stop = min(row + rows_per_copy, store.num_images)
            for target, source in zip((writer.values, writer.ids, writer.scales), arrays):
                if source is not None:
                    target[start + row:start + stop] = source[row:stop]
        start += store.num_images
    writer.finish(paths, settings)
    commit_dir(partial, out_dir, overwrite=True)
    return out_dir


def write_packed(out_dir: str | os.PathLike, paths: Sequence[str], values, ids,
                 num_classes: int = DEFAULT_CLASSES, dtype: str = "fp32", annotator: dict | None = None,
                 overwrite: bool = False) -> Path:
    """A packed store from in-memory maps values/ids [N, k, H, W] (entries sorted largest first)."""
    values, ids = torch.as_tensor(values), torch.as_tensor(ids)
    check_classes(ids, num_classes, out_dir)
    out_dir = Path(out_dir)
    partial = partial_dir(out_dir)
    shutil.rmtree(partial, ignore_errors=True)
    writer = PackedWriter(partial, len(paths), values.shape[1], values.shape[2:], dtype)
    writer.write(0, values, ids)
    writer.finish(paths, {"num_classes": num_classes, "annotator": annotator})
    commit_dir(partial, out_dir, overwrite)
    return out_dir


def check_classes(ids: torch.Tensor, num_classes: int, where) -> None:
    if num_classes > MAX_CLASSES:
        raise LabelMapError(f"{num_classes} classes do not fit the uint16 ids of a packed store")
    if ids.numel() and int(ids.max()) >= num_classes:
        raise LabelMapError(f"{where}: class id {int(ids.max())} >= num_classes {num_classes}")


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
        self._records = None
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
        """(values, ids, scales or None), memory-mapped read-only, opened once per process; their shapes and
        dtypes are checked against the index then (its declared shape, not any one image's)."""
        if self.dtype == "compact":
            raise LabelMapError(f"{self.path} is a compact store: it has no fixed-width arrays (read it with read)")
        if self._arrays is None or self._pid != os.getpid():
            names = (VALUES, IDS, SCALES) if self.dtype == "int8" else (VALUES, IDS)
            values, ids, *scales = (self._open(name) for name in names)
            arrays = (values, ids, scales[0] if scales else None)
            problems = self.array_problems(arrays)
            if problems:
                raise LabelMapError(f"{problems[0]}: the store is damaged or was written by another tool; "
                                    f"regenerate it")
            self._arrays, self._pid = arrays, os.getpid()
        return self._arrays

    def array_problems(self, arrays) -> list[str]:
        """Arrays whose shape or dtype differs from what the index declares."""
        shape = (self.num_images, self.topk, *self.grid)
        wanted = ((VALUES, DTYPES[self.dtype], shape), (IDS, np.uint16, shape), (SCALES, np.float32,
                                                                                   (self.num_images, 2)))
        return [f"{self.path / name}: {array.shape} {array.dtype}, expected {want} {np.dtype(dtype)} as "
                f"{self.path / INDEX} declares" for array, (name, dtype, want) in zip(arrays, wanted)
                if array is not None and (array.shape != want or array.dtype != dtype)]

    def _open(self, name: str) -> np.ndarray:
        try:
            return np.load(self.path / name, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise LabelMapError(f"cannot open {self.path / name}: {error}") from None

    def records(self) -> compact.RecordReader:
        """A compact store's files, opened once per process."""
        if self._records is None or self._pid != os.getpid():
            self._records, self._pid = compact.RecordReader(self.path, self.num_images), os.getpid()
        return self._records

    def name_of(self, row: int) -> str:
        return f"{self.paths[row]} (row {row} of {self.path})"

    def decode(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """A compact store's rows, decoded but not checked (LabelMapError for a damaged record)."""
        rows = as_rows(rows)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.num_images):
            raise IndexError(f"rows outside 0..{self.num_images - 1} of {self.path}")
        return self.records().decode(rows, self.topk, self.grid, lambda i: self.name_of(int(rows[i])))

    @property
    def bytes_per_image(self) -> int:
        """Fixed by the dtype, or for a compact store measured: its files' bytes per image."""
        if self.dtype != "compact":
            return super().bytes_per_image
        return round(compact.store_bytes(self.path) / max(self.num_images, 1))

    def read(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        rows = as_rows(rows)
        if self.dtype == "compact":
            out, out_ids = self.decode(rows)
            check_maps_read(out, out_ids, self.num_classes, lambda i: self.name_of(int(rows[i])))
            return torch.from_numpy(out), torch.from_numpy(out_ids)
        values, ids, scales = self.arrays()
        if self.dtype == "int8":
            out = dequantize_uint8(values[rows], np.asarray(scales[rows]))
        else:
            out = values[rows].astype(np.float32)
        out_ids = ids[rows].astype(np.int64)
        check_maps_read(out, out_ids, self.num_classes, lambda i: self.name_of(int(rows[i])))
        return torch.from_numpy(out), torch.from_numpy(out_ids)

    def __getstate__(self):
        state = super().__getstate__()
        state.update(_arrays=None, _records=None, _pid=None, _paths=None)
        return state
