"""The value types a packed store can hold (fp32, fp16, or int8: uint8 codes quantised per image, value =
q * scale + offset with (scale, offset) float32; error <= scale / 2; or compact: one zlib record per image, see
repro.labelmaps.compact), and what one image costs in each (for compact, measured from a store).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from repro.labelmaps.errors import LabelMapError

DTYPES = {"fp32": np.float32, "fp16": np.float16, "int8": np.uint8, "compact": np.uint8}
FIXED_DTYPES = ("fp32", "fp16", "int8")  # a fixed size per image; compact's depends on the maps
FP16_MAX = float(np.finfo(np.float16).max)


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise LabelMapError(f"unknown label-map dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    return dtype


def bytes_per_image(topk: int, grid: Sequence[int], dtype: str) -> int:
    if dtype not in FIXED_DTYPES:
        raise LabelMapError(f"a {dtype} store's size depends on its maps: measure a store's bytes_per_image")
    cells = topk * grid[0] * grid[1]
    return cells * (np.dtype(DTYPES[dtype]).itemsize + 2) + (8 if dtype == "int8" else 0)


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
