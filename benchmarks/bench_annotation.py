"""Label-map generation throughput: images/s of `repro.labelmaps.generate_labelmaps` (what `python -m repro
relabel` and the pipeline's labelmaps step run) against the bare forward pass of the same model, `model(images)`
on tensors already in memory, at the same input size and batch. Issue 17's target: generation >= 90% of the bare
forward.

Generation is measured two ways, each the library's whole `generate_labelmaps` call (annotator: normalisation,
features, the head as a 1x1 convolution, top-k per cell; the packed store written in a temporary folder, progress
records, index and rename):
- in memory: its image dataset replaced by tensors already in memory (0 loader workers), so the compute path and
  the store writes alone;
- from JPEGs: end to end from a generated ImageNet-layout folder (`train/<wnid>/<file>.JPEG`, --jpeg-size pixels),
  decoded and resized by its DataLoader with each --workers count.
The sides run interleaved (one repetition of every side, in a rotating order, then the next), so a concurrent load
hits them alike; the table gives the median images/s of each side, its ratio to the bare forward's median, and
the range of its ratios within single repetitions.

    python benchmarks/bench_annotation.py [--model resnet50] [--size 224] [--batch 32] [--batches 4]
                                          [--repeats 5] [--workers 0 1] [--threads 1] [--device cuda]
    python benchmarks/bench_annotation.py --small    # a smoke test: a tiny resnet18, 64 px, 2 batches of 4
On a GPU (the default where one is visible) both sides run there in fp32, the bare forward on a batch already on
the device, generation from host memory or JPEGs as in the pipeline.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import timm
import torch

from repro.labelmaps import generate
from repro.labelmaps.annotator import Annotator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import work_dir, write_jpegs  # noqa: E402

TINY = {"channels": [8, 16, 32, 64], "stem_width": 8}  # the --small model (the proxy's resnet kwargs, smaller)


@contextmanager
def images_in_memory(batch: torch.Tensor):
    """generate_labelmaps with its image dataset replaced by the rows of `batch` (already resized, in memory)."""

    class MemoryImages(torch.utils.data.Dataset):
        def __init__(self, root, relpaths, input_size):
            self.count = len(relpaths)

        def __len__(self) -> int:
            return self.count

        def __getitem__(self, index: int):
            return batch[index % len(batch)], index

    with mock.patch.object(generate, "ImageFiles", MemoryImages):
        yield


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare_forward(model: torch.nn.Module, batch: torch.Tensor, batches: int, device: str) -> float:
    synchronize(device)
    started = time.perf_counter()
    with torch.inference_mode():
        for _ in range(batches):
            model(batch)
    synchronize(device)
    return time.perf_counter() - started


def generation(annotator: Annotator, relpaths: list[str], root: Path, out: Path, args, workers: int) -> float:
    started = time.perf_counter()
    generate.generate_labelmaps(annotator, relpaths, root, out, input_size=args.size, topk=args.topk,
                                dtype=args.dtype, batch_size=args.batch, workers=workers, device=args.device,
                                overwrite=True, progress=False)
    seconds = time.perf_counter() - started
    shutil.rmtree(out)
    return seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", help="a timm model name (random weights)")
    parser.add_argument("--size", type=int, default=224, help="input size (the images are resized whole to it)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4, help="batches per timed repetition")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions of every side (median)")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--dtype", default="fp32", help="the store's value type")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="loader workers of the JPEG runs")
    parser.add_argument("--jpeg-size", type=int, nargs=2, default=[500, 375], metavar=("W", "H"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where both sides run (default: cuda where visible, else cpu)")
    parser.add_argument("--small", action="store_true", help="a tiny resnet18 at 64 px, 2 batches of 4, 2 repeats "
                                                             "(a smoke test)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the JPEGs and stores (default: a "
                                                                "temporary folder, removed afterwards)")
    args = parser.parse_args(argv)
    kwargs = {}
    if args.small:
        args.model, args.size, args.batch, args.batches, args.repeats = "resnet18", 64, 4, 2, 2
        args.jpeg_size, kwargs = [80, 60], TINY
    torch.set_num_threads(args.threads)
    with work_dir(args.dir, "bench_annotation_") as work:
        run(args, work, kwargs)


def run(args, work: Path, kwargs: dict) -> None:
    count = args.batch * args.batches
    started = time.perf_counter()
    relpaths = write_jpegs(work, count, tuple(args.jpeg_size))
    print(f"{count} JPEGs of {args.jpeg_size[0]}x{args.jpeg_size[1]} px in {time.perf_counter() - started:.1f} s")
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False, num_classes=1000, **kwargs).eval()
    annotator = Annotator(model).to(args.device)  # moves its model too
    batch = torch.rand(args.batch, 3, args.size, args.size)
    on_device = batch.to(args.device)
    grid = annotator.grid(args.size)
    sides = {"bare forward model(images)": lambda: bare_forward(model, on_device, args.batches, args.device)}

    def in_memory():
        with images_in_memory(batch):
            return generation(annotator, relpaths, work, work / "store", args, 0)

    sides["generation, images in memory"] = in_memory
    for workers in args.workers:
        sides[f"generation from JPEGs, {workers} worker(s)"] = (
            lambda w=workers: generation(annotator, relpaths, work, work / "store", args, w))
    with torch.inference_mode():  # untimed: oneDNN and cuDNN pick their kernels on a model's first passes
        model(on_device), annotator(on_device, args.topk)
    seconds = {name: [] for name in sides}
    names = list(sides)
    for repeat in range(args.repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            seconds[name].append(sides[name]())
    rates = {name: count / float(np.median(times)) for name, times in seconds.items()}
    bare = rates[names[0]]
    print(f"timm {args.model} (random weights), {args.size} px, batch {args.batch}, top-{args.topk} {args.dtype} "
          f"{grid[0]}x{grid[1]} maps, {count} images a repetition, {args.threads} thread(s), "
          f"{torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'}, "
          f"torch {torch.__version__}; median of {args.repeats} interleaved repetitions")
    print(f"{'side':<38} {'img/s':>8} {'x bare':>7} {'range':>13}")
    for name, rate in rates.items():
        # the ratio within each repetition, to the bare forward of the same repetition
        within = np.array(seconds[names[0]]) / np.array(seconds[name])
        print(f"{name:<38} {rate:>8.2f} {rate / bare:>7.3f} {within.min():>6.3f}-{within.max():.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
