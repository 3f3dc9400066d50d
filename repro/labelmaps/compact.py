"""The compact encoding of a packed store (dtype `compact`): one zlib record per image, about a third of fp16's bytes.

Files beside `index.json` (written by `repro.labelmaps.packed.PackedWriter`):
- `records.bin`: the images' records, appended in the order they are written (rows in any order);
- `rows.npy` [N, 3] uint64: each row's (offset in records.bin, record length, palette size); length 0 = not
  written;
- `scales.npy` [N, 2] float32: each image's (scale, offset) of its value codes.

One image's record is zlib (level 9, with its adler-32 check, so a damaged record is refused rather than read as
other maps) of, laid out cell by cell (H, W, k order: the k entries of a position are adjacent, which compresses
better than k planes):
- value codes, uint8 [H, W, k]: the value v quantised per image to VALUE_BITS bits, q = round((v - offset) /
  scale) with scale = (max - min) / (2^VALUE_BITS - 1), stored as q at rank 0 and as the step down from the rank
  before at ranks 1..k-1 (entries are sorted largest first, so the steps are small and repeat; decoding adds them
  back modulo 256, exact for unsorted maps too);
- palette indices [H, W, k]: uint8, or uint16 little-endian where an image holds more than 256 classes;
- the palette, uint16 [P]: the image's distinct class ids, most frequent first (so the common classes get the
  small, well-compressing indices).

Bounds: class ids are lossless; |value - decoded| <= scale / 2 = (max - min) / (2 (2^VALUE_BITS - 1)) of the
image's values (range / 126 at 6 bits; a constant map is exact).

Why 6 bits (measured on `repro.labelmaps.examples.example_label_maps()`, EfficientNet-Lite0 on 4 photos, top-5,
15x15, 75-121 classes per image; bytes per image with its rows.npy and scales.npy entries; pooled targets of 2,000
random crops against fp32's, total variation mean / max):

    value bits   bytes per image (mean)   TV mean / max
    5            1,324-1,649 (1,450)      0.0028 / 0.033
    6            1,438-1,752 (1,560)      0.0017 / 0.012
    7            1,557-1,841 (1,668)      0.0007 / 0.006
    8            1,674-1,933 (1,773)      0.0005 / 0.004   (int8: 3,383 B, the same TV)

6 bits keeps the mean TV at a third of the 0.005 budget and the largest image 12% under 2,000 B; 5 bits would
save 7% more bytes for 1.6x the mean and 2.8x the largest TV, leaving little room for maps whose logits span a
wider range than Lite0's. Storing the steps down the ranks instead of plain codes saves 7-13%.

Reading decompresses each row's record (one zlib call per image, 6-30 us for a 15x15 top-5 record on this
project's 2-core machine beside a training job: the bulk of a read) and decodes the batch at once with numpy; a
read costs ~30 us per image, ~7x faster than one torch.load per released file and ~10-20x slower than the
fixed-width dtypes (docs/benchmarks.md). A fixed-width layout (decoded by numpy alone, no zlib) would not fit
2,000 B with room to spare: 6-bit values and 7-bit palette indices take 1,828 B before the palette (150-240 B),
and an image of more than 128 classes needs 8-bit indices.
"""
from __future__ import annotations

import mmap
import os
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from repro.labelmaps.errors import LabelMapError

VALUE_BITS = 6
LEVEL = 9
RECORDS, ROWS, SCALES = "records.bin", "rows.npy", "scales.npy"
BYTE_PALETTE = 256  # up to this many classes an image's palette indices are one byte each


def quantize(values: np.ndarray, bits: int = VALUE_BITS) -> tuple[np.ndarray, float, float]:
    """Per-image codes in 0..2^bits-1 and (scale, offset); |value - (code * scale + offset)| <= scale / 2."""
    lo, hi = float(values.min()), float(values.max())
    scale = np.float32((hi - lo) / (2 ** bits - 1)) if hi > lo else np.float32(1.0)
    codes = np.clip(np.rint((values - np.float32(lo)) / scale), 0, 2 ** bits - 1).astype(np.uint8)
    return codes, float(scale), lo


def encode_image(values: np.ndarray, ids: np.ndarray, bits: int = VALUE_BITS) -> tuple[bytes, int, float, float]:
    """(record, palette size, scale, offset) of one image's map, values float32 and ids [k, H, W]."""
    codes, scale, offset = quantize(values, bits)
    cells = np.ascontiguousarray(codes.transpose(1, 2, 0))  # [H, W, k]
    steps = cells.copy()
    steps[..., 1:] = cells[..., :-1] - cells[..., 1:]  # uint8 arithmetic: modulo 256
    classes, counts = np.unique(ids, return_counts=True)
    palette = classes[np.argsort(-counts, kind="stable")]
    position = np.empty(int(palette.max()) + 1, dtype=np.int64)
    position[palette] = np.arange(len(palette))
    index_type = np.uint8 if len(palette) <= BYTE_PALETTE else np.dtype("<u2")
    indices = position[ids].transpose(1, 2, 0).astype(index_type)
    raw = steps.tobytes() + indices.tobytes() + palette.astype("<u2").tobytes()
    return zlib.compress(raw, LEVEL), len(palette), scale, offset


def decoded_length(entries: int, palette: int) -> int:
    return entries * (2 if palette <= BYTE_PALETTE else 3) + 2 * palette


class RecordWriter:
    """Appends records to records.bin and fills rows.npy / scales.npy in place. With `resume`, continues a
    partial store whose rows before `done` are complete: records.bin is cut back to where they end, so the rows
    written again append exactly what an uninterrupted writer would."""

    def __init__(self, directory: Path, num_images: int, resume: bool = False, done: int | None = None):
        from numpy.lib.format import open_memmap

        self.directory = directory
        if resume:
            self.rows = open_memmap(directory / ROWS, mode="r+")
            self.scales = open_memmap(directory / SCALES, mode="r+")
            if self.rows.shape != (num_images, 3) or self.scales.shape != (num_images, 2):
                raise LabelMapError(f"{directory / ROWS} holds {len(self.rows)} rows, expected {num_images}")
            end = 0
            if done is not None:
                self.rows[done:] = 0
                written = self.rows[:done]
                end = int((written[:, 0] + written[:, 1]).max(initial=0))
            else:
                end = os.path.getsize(directory / RECORDS)
            with open(directory / RECORDS, "r+b") as file:
                file.truncate(end)
        else:
            directory.mkdir(parents=True, exist_ok=True)
            self.rows = open_memmap(directory / ROWS, mode="w+", dtype=np.uint64, shape=(num_images, 3))
            self.scales = open_memmap(directory / SCALES, mode="w+", dtype=np.float32, shape=(num_images, 2))
            (directory / RECORDS).write_bytes(b"")
        self.file = open(directory / RECORDS, "ab")
        self.end = self.file.tell()

    def write(self, start: int, values: np.ndarray, ids: np.ndarray) -> None:
        for offset, (v, i) in enumerate(zip(values, ids)):
            record, palette, scale, low = encode_image(v, i)
            self.file.write(record)
            self.rows[start + offset] = (self.end, len(record), palette)
            self.scales[start + offset] = (scale, low)
            self.end += len(record)

    def flush(self) -> None:
        self.file.flush()
        self.rows.flush()
        self.scales.flush()

    def close(self) -> None:
        self.flush()
        self.file.close()


def image_bytes(rows: np.ndarray) -> np.ndarray:
    """Each image's bytes from its row-table entries [N, 3]: its record plus its row-table and scales entries (the
    files' fixed headers left out, which a store of many images spreads to nothing)."""
    return rows[:, 1].astype(np.int64) + 3 * np.dtype(np.uint64).itemsize + 2 * np.dtype(np.float32).itemsize


def store_bytes(directory: Path) -> int:
    """What a compact store's maps take on disk (records, row table and scales; not the index of paths)."""
    return sum(os.path.getsize(directory / name) for name in (RECORDS, ROWS, SCALES))


class RecordReader:
    """A compact store's files, opened read-only (records.bin memory-mapped)."""

    def __init__(self, directory: Path, num_images: int):
        self.directory = directory
        try:
            self.rows = np.load(directory / ROWS, mmap_mode="r")
            self.scales = np.load(directory / SCALES, mmap_mode="r")
            with open(directory / RECORDS, "rb") as file:
                size = os.fstat(file.fileno()).st_size
                self.records = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except (OSError, ValueError) as error:
            raise LabelMapError(f"cannot open the compact store {directory}: {error}") from None
        self.size = size
        for name, array, shape, dtype in ((ROWS, self.rows, (num_images, 3), np.uint64),
                                          (SCALES, self.scales, (num_images, 2), np.float32)):
            if array.shape != shape or array.dtype != dtype:
                raise LabelMapError(f"{directory / name}: {array.shape} {array.dtype}, expected {shape} "
                                    f"{np.dtype(dtype)}: the store is damaged or was written by another tool; "
                                    f"regenerate it")

    def decode(self, rows: np.ndarray, topk: int, grid: Sequence[int],
               name_of: Callable[[int], str]) -> tuple[np.ndarray, np.ndarray]:
        """(values float32 [B, k, H, W], ids int64 [B, k, H, W]) of rows; a damaged or missing record raises
        LabelMapError naming `name_of(i)` for the i-th row read."""
        table = np.asarray(self.rows[rows])
        offsets, lengths, palettes = (table[:, j].astype(np.int64) for j in range(3))
        entries = topk * grid[0] * grid[1]
        bad = (lengths <= 0) | (offsets + lengths > self.size) | (palettes < 1) | (palettes > entries)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = ("was never written" if lengths[i] <= 0 else "lies outside records.bin (truncated?)"
                    if offsets[i] + lengths[i] > self.size else f"has a bad palette size {palettes[i]} in {ROWS}")
            raise LabelMapError(f"label map of {name_of(i)} {what}: regenerate the store")
        view = memoryview(self.records)
        expected = [decoded_length(entries, p) for p in palettes.tolist()]
        slot = decoded_length(entries, BYTE_PALETTE)  # every narrow record padded to this: one reshape, no gather
        decoded = []
        for i, (start, length, size) in enumerate(zip(offsets.tolist(), lengths.tolist(), expected)):
            try:
                record = zlib.decompress(view[start:start + length], zlib.MAX_WBITS, size)
            except zlib.error as error:
                raise LabelMapError(f"label map of {name_of(i)} is damaged ({error}): regenerate the store") from None
            if len(record) != size:
                raise LabelMapError(f"label map of {name_of(i)} is damaged ({len(record)} bytes decoded, expected "
                                    f"{size}): regenerate the store")
            decoded.append(record)
        view.release()
        scales = np.asarray(self.scales[rows], dtype=np.float32)
        values = np.empty((len(rows), topk, *grid), dtype=np.float32)
        ids = np.empty((len(rows), topk, *grid), dtype=np.int64)
        wide = palettes > BYTE_PALETTE
        narrow = np.flatnonzero(~wide)
        if len(narrow):
            block = np.frombuffer(b"".join(decoded[i].ljust(slot, b"\0") for i in narrow.tolist()),
                                  dtype=np.uint8).reshape(len(narrow), slot)
            values[narrow], ids[narrow] = _decode_block(block, palettes[narrow], scales[narrow], topk, grid, 1,
                                                        lambda i: name_of(int(narrow[i])))
        for i in np.flatnonzero(wide).tolist():  # more than 256 classes in one image: rare, one at a time
            block = np.frombuffer(decoded[i], dtype=np.uint8)[None]
            values[i], ids[i] = _decode_block(block, palettes[i:i + 1], scales[i:i + 1], topk, grid, 2,
                                              lambda _: name_of(i))
        return values, ids


def _decode_block(block: np.ndarray, palettes: np.ndarray, scales: np.ndarray, topk: int, grid: Sequence[int],
                  index_bytes: int, name_of: Callable[[int], str]) -> tuple[np.ndarray, np.ndarray]:
    """Values and ids [B, k, H, W] of decoded records [B, bytes] whose palette indices are index_bytes wide."""
    count, entries = len(block), topk * grid[0] * grid[1]
    cells = block[:, :entries].reshape(count, -1, topk)
    codes = np.empty_like(cells)
    codes[..., 0] = cells[..., 0]
    for rank in range(1, topk):  # the steps down the ranks added back (uint8: modulo 256)
        np.subtract(codes[..., rank - 1], cells[..., rank], out=codes[..., rank])
    values = codes.astype(np.float32) * scales[:, 0, None, None] + scales[:, 1, None, None]
    indices = block[:, entries:entries * (1 + index_bytes)]
    if index_bytes == 2:
        indices = indices.view("<u2")
    palette_start = entries * (1 + index_bytes)
    palette = block[:, palette_start:].view("<u2")[:, :palettes.max()]
    bad = indices.max(axis=1) >= palettes
    if bad.any():
        raise LabelMapError(f"label map of {name_of(int(np.flatnonzero(bad)[0]))} is damaged (a palette index past "
                            f"its palette): regenerate the store")
    ids = np.take_along_axis(palette, indices.astype(np.intp), axis=1)
    shape = (count, *grid, topk)
    return (values.reshape(shape).transpose(0, 3, 1, 2), ids.reshape(shape).transpose(0, 3, 1, 2))
