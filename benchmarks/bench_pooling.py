"""Time LabelPooling: the sparse top-k computation against the official dense one (scatter the top-k into
[B, C, H, W], then torchvision's roi_align). Prints a table of ms per batch and us per image.

    python benchmarks/bench_pooling.py [--batch 256] [--classes 1000] [--threads 1]
"""
from __future__ import annotations

import argparse
import time

import torch
from torchvision.ops import roi_align

from repro.crops import crop_rng, sample_rrc_boxes
from repro.pooling import densify, pool_labels


def dense_pool_labels(values, ids, boxes, num_classes):
    dense = densify(values, ids, num_classes)
    height, width = values.shape[-2:]
    rois = torch.cat([torch.arange(len(boxes), dtype=boxes.dtype)[:, None],
                      boxes * torch.tensor([width, height, width, height], dtype=boxes.dtype)], dim=1)
    return roi_align(dense, rois, (1, 1), 1.0, -1, aligned=True).flatten(1).softmax(dim=1)


def best_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--grid", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    boxes = torch.as_tensor(sample_rrc_boxes(500, 375, args.batch, crop_rng(0)) / [500, 375, 500, 375],
                            dtype=torch.float32)
    print(f"batch {args.batch}, {args.classes} classes, {args.grid}x{args.grid} map, {args.threads} thread(s); "
          f"best of {args.repeats}")
    print(f"{'k':>3} {'method':<22} {'ms/batch':>9} {'us/image':>9} {'max |diff|':>11}")
    for k in (1, 5, 10):
        values = torch.randn(args.batch, k, args.grid, args.grid, generator=gen) * 4
        ids = torch.rand(args.batch, args.classes, args.grid, args.grid, generator=gen).argsort(dim=1)[:, :k]
        sparse = pool_labels(values, ids, boxes, args.classes)
        dense = dense_pool_labels(values, ids, boxes, args.classes)
        diff = (sparse - dense).abs().max().item()
        rows = (("sparse (repro.pooling)", lambda: pool_labels(values, ids, boxes, args.classes)),
                ("dense + roi_align", lambda: dense_pool_labels(values, ids, boxes, args.classes)))
        for name, fn in rows:
            seconds = best_time(fn, args.repeats)
            print(f"{k:>3} {name:<22} {seconds * 1e3:>9.2f} {seconds * 1e6 / args.batch:>9.2f} {diff:>11.2e}")


if __name__ == "__main__":
    main()
