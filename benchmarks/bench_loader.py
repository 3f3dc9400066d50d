"""Training data loading: images/s of the ReLabel loader (each crop with its label-map rows, read in the loader)
against the same loader without label maps (original labels). Issue 17's target: with maps >= 97% of without.

Both sides are the trainer's own loader (`repro.train.trainer.train_loader` over `repro.data.TrainCrops`: JPEG
decoding, RandomResizedCrop, flip, colour jitter, normalisation, collation) with the proxy profile's crop settings
and batch, over a generated ImageNet-layout folder of --images JPEGs (--jpeg-size px, the proxy world's 112) and a
packed store of top-k maps for them (the proxy's top-5 14x14 fp32 by default). Each repetition is one whole epoch
(so that no worker is left finishing prefetched batches while the next side is timed); the sides run interleaved
(every side once, in a rotating order, then the next repetition) so a concurrent load hits them alike, and the
table gives the median images/s, the ratio with maps / without at each worker count, and the range of that ratio
within single repetitions.

    python benchmarks/bench_loader.py [--images 3072] [--repeats 9] [--workers 0 1] [--dtype fp32]
    python benchmarks/bench_loader.py --small    # a smoke test: 32 images, 2 batches of 16
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from repro.config import profile_config
from repro.data.datasets import TrainCrops, batch_problems
from repro.data.folders import image_folder
from repro.data.transforms import TrainCrop
from repro.labelmaps.packed import write_packed
from repro.train.trainer import train_loader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import work_dir, write_jpegs  # noqa: E402


def write_store(out: Path, relpaths: list[str], num_classes: int, topk: int, grid: int, dtype: str,
                seed: int = 0) -> Path:
    """Random top-k maps (values sorted largest first, k distinct classes per cell), rows in a shuffled order."""
    rng = np.random.default_rng(seed)
    count = len(relpaths)
    values = -np.sort(-rng.normal(0, 3, (count, topk, grid, grid)).astype(np.float32), axis=1)
    ids = (rng.integers(0, num_classes, (count, 1, grid, grid)) + np.arange(topk)[:, None, None]) % num_classes
    order = rng.permutation(count)
    return write_packed(out, [relpaths[i] for i in order], values[order], ids[order], num_classes=num_classes,
                        dtype=dtype)


def images_per_second(loader, epoch: int) -> float:
    """Images/s of a whole epoch (a new iterator; persistent workers stay up)."""
    loader.sampler.set_epoch(epoch)
    started, images = time.perf_counter(), 0
    for batch in loader:
        batch_problems(batch, skip_unreadable=False)
        images += len(batch["index"])
    return images / (time.perf_counter() - started)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="proxy", help="crop settings and batch size from this profile")
    parser.add_argument("--images", type=int, default=3072, help="the epoch of every repetition")
    parser.add_argument("--classes", type=int, default=54, help="the proxy world has about 54 classes")
    parser.add_argument("--jpeg-size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=9, help="timed repetitions of every side (median)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--grid", type=int, default=14)
    parser.add_argument("--dtype", default="fp32", help="the store's value type")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--small", action="store_true", help="32 images, 2 batches of 16, 2 repeats (a smoke test)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the JPEGs and the store (default: a "
                                                                "temporary folder, removed afterwards)")
    args = parser.parse_args(argv)
    if args.small:
        args.images, args.repeats, args.jpeg_size, args.classes = 32, 2, 48, 8
    torch.set_num_threads(args.threads)
    with work_dir(args.dir, "bench_loader_") as work:
        run(args, work)


def run(args, work: Path) -> None:
    train = profile_config(args.profile)["train"]
    batch = 16 if args.small else int(train["batch_size"])
    crop_size = 24 if args.small else int(train["crop_size"])
    started = time.perf_counter()
    relpaths = write_jpegs(work, args.images, (args.jpeg_size, args.jpeg_size), args.classes)
    store = write_store(work / "store", relpaths, args.classes, args.topk, args.grid, args.dtype)
    print(f"{args.images} JPEGs of {args.jpeg_size} px and their {args.dtype} top-{args.topk} {args.grid}x{args.grid} "
          f"maps in {time.perf_counter() - started:.1f} s")
    images = image_folder(work, "train", [f"n{i:08d}" for i in range(args.classes)])
    crop = TrainCrop(crop_size, train["scale"], train["ratio"], train["hflip"], train["color_jitter"])
    loaders = {}
    for workers in args.workers:
        for maps in (None, store):
            loaders[workers, maps is not None] = train_loader(TrainCrops(images, crop, 0, maps), batch, workers, 0)
    names = list(loaders)
    for key in names:  # untimed: starts the persistent workers and opens the store in them
        images_per_second(loaders[key], 0)
    rates = {key: [] for key in names}
    for repeat in range(args.repeats):
        for key in names[repeat % len(names):] + names[:repeat % len(names)]:
            rates[key].append(images_per_second(loaders[key], 1 + repeat))
    print(f"{args.profile} crops ({crop_size} px, batch {batch}), an epoch of {args.images // batch} batches a "
          f"repetition, {args.threads} thread(s) in the main process, torch {torch.__version__}; median of {args.repeats} "
          f"interleaved repetitions")
    print(f"{'workers':>7} {'original labels img/s':>21} {'ReLabel maps img/s':>19} {'ratio':>6} {'range':>13}")
    for workers in args.workers:
        without, with_maps = (float(np.median(rates[workers, maps])) for maps in (False, True))
        within = np.array(rates[workers, True]) / np.array(rates[workers, False])  # within each repetition
        print(f"{workers:>7} {without:>21.0f} {with_maps:>19.0f} {with_maps / without:>6.3f} "
              f"{within.min():>6.3f}-{within.max():.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
