"""Time reading random batches of label maps: the packed store (fp32, fp16, int8, compact) against one
`torch.load` per official `.pt` file and the suite's official reader (`OfficialLabelMaps.read`), with the page
cache warm and cold. Prints ms per batch, us per image, bytes per image and each reader's speed-up over per-file
`torch.load`, and the time to convert the official files to a compact store.

The maps are EfficientNet-Lite0's of 4 real photos (repro.labelmaps.examples, top-5, 15x15, 1000 classes)
renumbered, turned and jittered into --images maps (`varied_label_maps`): real palettes (75-121 classes per image)
and spatial structure, which is what the compact store's size and speed depend on. Cold: every file a batch reads
is dropped from the page cache (posix_fadvise DONTNEED, no root needed; memory maps are closed first, since mapped
pages are not dropped) before the batch is timed.

    python benchmarks/bench_store_reads.py [--images 10000] [--batch 256] [--batches 5] [--dir DIR]
    python benchmarks/bench_store_reads.py --small     # a smoke test: 512 maps, 2 batches of 64
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from repro.labelmaps.convert import derive_store, official_to_packed
from repro.labelmaps.examples import example_label_maps, varied_label_maps
from repro.labelmaps.official import OfficialLabelMaps, save_official
from repro.labelmaps.reader import open_labelmaps

PACKED = ("fp32", "fp16", "int8", "compact")


def evict(files) -> None:
    """Drop files from the page cache (what is not dirty and not mapped)."""
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def make_official(directory: Path, count: int, seed: int) -> None:
    _, values, ids = example_label_maps()
    values, ids = varied_label_maps(values, ids, count, num_classes=1000, seed=seed)
    for i, (v, c) in enumerate(zip(values, ids)):
        save_official(directory / f"n{i % 1000:08d}" / f"n{i % 1000:08d}_{i}.pt", torch.from_numpy(v),
                      torch.from_numpy(c))


def per_file_torch_load(files):
    tensors = [torch.load(file, map_location="cpu", weights_only=True) for file in files]
    stacked = torch.stack(tensors)
    return stacked[:, 0], stacked[:, 1].round().long()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=5, help="timed batches per reader and cache state (median)")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the stores (default: a temporary "
                                                                "folder, removed afterwards)")
    parser.add_argument("--small", action="store_true", help="512 maps, 2 batches of 64 (a smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.small:
        args.images, args.batch, args.batches = 512, 64, 2
    torch.set_num_threads(1)
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench_store_reads_"))
    try:
        run(args, work)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path) -> None:
    official = work / "official"
    started = time.perf_counter()
    if not official.exists():
        make_official(official, args.images, args.seed)
    print(f"{args.images} official files (top-5, 15x15, 1000 classes) in {time.perf_counter() - started:.1f} s")
    stores = {}
    for dtype in PACKED:
        shutil.rmtree(work / dtype, ignore_errors=True)
    started = time.perf_counter()
    stores["compact"] = official_to_packed(official, work / "compact", dtype="compact")
    seconds = time.perf_counter() - started
    print(f"official -> compact conversion: {seconds:.1f} s ({seconds * 10000 / args.images:.1f} s per 10,000 files)")
    stores["fp32"] = official_to_packed(official, work / "fp32", dtype="fp32")
    for dtype in ("fp16", "int8"):
        stores[dtype] = derive_store(stores["fp32"], work / dtype, dtype=dtype)
    keys = OfficialLabelMaps(official).paths
    readers = {"torch.load per file": lambda: None, "OfficialLabelMaps.read": lambda: OfficialLabelMaps(official)}
    readers.update({f"packed {dtype}": (lambda d=dtype: open_labelmaps(stores[d])) for dtype in PACKED})
    sizes = {"torch.load per file": sum(f.stat().st_size for f in official.glob("*/*.pt")) / args.images,
             "OfficialLabelMaps.read": sum(f.stat().st_size for f in official.glob("*/*.pt")) / args.images}
    sizes.update({f"packed {d}": open_labelmaps(stores[d]).bytes_per_image for d in PACKED})
    rng = np.random.default_rng(args.seed)
    batches = [rng.choice(args.images, size=min(args.batch, args.images), replace=False)
               for _ in range(args.batches)]
    reference, times = {}, {}
    for name, opener in readers.items():
        packed = name.startswith("packed")
        for cold in (False, True):
            maps, elapsed = opener(), []
            for rows in batches:
                files = [official / f"{keys[r]}.pt" for r in rows]
                if cold:
                    if packed:
                        maps = None
                        gc.collect()  # closes the store's memory maps: mapped pages are not dropped
                        maps = opener()
                        files = [f for f in Path(stores[name.split()[1]]).iterdir() if f.is_file()]
                    evict(files)
                read = (lambda: per_file_torch_load(files)) if maps is None else (lambda: maps.read(rows))
                if not cold:
                    read()  # the batch's files in the page cache
                start = time.perf_counter()
                values, ids = read()
                elapsed.append(time.perf_counter() - start)
                check(reference, name, rows, values, ids)
            times[name, cold] = float(np.median(elapsed))
    print(f"batch {args.batch} random rows of {args.images}, 1 thread, median of {args.batches} batches; "
          f"cold: the files dropped from the page cache before each batch")
    print(f"{'reader':<24} {'B/image':>8} {'warm ms/batch':>14} {'us/image':>9} {'x torch.load':>13} "
          f"{'cold ms/batch':>14} {'us/image':>9} {'x torch.load':>13}")
    for name in readers:
        cells = []
        for cold in (False, True):
            seconds = times[name, cold]
            cells.append(f"{seconds * 1e3:>14.2f} {seconds * 1e6 / args.batch:>9.1f} "
                         f"{times['torch.load per file', cold] / seconds:>13.1f}")
        print(f"{name:<24} {sizes[name]:>8.0f} {' '.join(cells)}")
    sys.stdout.flush()


def check(reference: dict, name: str, rows, values, ids) -> None:
    """Every reader returns the same ids and values within its dtype's error (compact: 6-bit codes)."""
    key = tuple(rows.tolist())
    if key not in reference:
        reference[key] = (values, ids)
        return
    ref_values, ref_ids = reference[key]
    if not torch.equal(ids, ref_ids):
        raise AssertionError(f"{name} read other class ids than per-file torch.load")
    spread = (ref_values.amax(dim=(1, 2, 3)) - ref_values.amin(dim=(1, 2, 3)))[:, None, None, None]
    if ((values - ref_values).abs() > spread / 126 + 1e-5).any():
        raise AssertionError(f"{name} read values outside its error bound")


if __name__ == "__main__":
    main()
