"""What the benchmarks that decode images share (bench_annotation, bench_loader): photo-like JPEGs in ImageNet's
layout, and a working folder."""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from repro.imagefiles import list_images


def write_jpegs(root: Path, count: int, size: tuple[int, int], classes: int = 8, seed: int = 0) -> list[str]:
    """`count` smooth JPEGs with sensor-like noise (quality 90) under root/train/<wnid>/, the i-th in class
    i % classes; their sorted root-relative paths."""
    rng = np.random.default_rng(seed)
    width, height = size
    for i in range(count):
        wnid = f"n{i % classes:08d}"
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
        pixels = np.asarray(coarse, dtype=np.float32) + rng.normal(0, 12, (height, width, 3))
        folder = root / "train" / wnid
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return list_images(root, "train")


@contextmanager
def work_dir(directory: Path | None, prefix: str) -> Iterator[Path]:
    """`directory`, or a temporary folder that is removed afterwards."""
    work = directory or Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        if directory is None:
            shutil.rmtree(work, ignore_errors=True)
