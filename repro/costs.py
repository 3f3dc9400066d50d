"""Section 3.3's cost accounting: label-map storage at ImageNet scale, and LabelPooling's time beside a training
step of the student (an in-process micro-benchmark). Generation and training times come from the cached runs.
"""
from __future__ import annotations

import time
from functools import partial
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from timm.loss import SoftTargetCrossEntropy

from repro.crops import crop_rng, sample_rrc_boxes
from repro.evaluate.classification import autocast_for
from repro.labelmaps.quantize import DTYPES, FIXED_DTYPES, bytes_per_image
from repro.labelmaps.reader import open_labelmaps
from repro.models import create_model
from repro.pooling import pool_labels

IMAGENET_TRAIN_IMAGES = 1_281_167
RELEASED_GRID = (15, 15)  # the released maps: EfficientNet-L2 at 475 px, stride 32
IMAGENET_CLASSES = 1000
OFFICIAL_BYTES_PER_ENTRY = 2 * 4  # the released [2, k, H, W] float32 tensor: a logit and a class id per entry
GIB = 2 ** 30
MAX_BENCHMARK_BATCH = 256  # the paper's batch per GPU (1024 over four); the step time scales with it
# A compact store's size depends on its maps: bytes per image (records, row table and scales) of EfficientNet-Lite0's
# top-5 15x15 maps of 4 real photos (repro.labelmaps.examples.example_label_maps, 75-121 classes per image),
# the nearest to the released EfficientNet-L2 maps this project can measure offline
COMPACT_TOPK, COMPACT_LITE0_BYTES_PER_IMAGE = 5, 1560


def official_bytes_per_image(topk: int, grid: Sequence[int]) -> int:
    return topk * grid[0] * grid[1] * OFFICIAL_BYTES_PER_ENTRY


def dense_bytes_per_image(grid: Sequence[int], num_classes: int, dtype: str = "fp32") -> int:
    """A full map: every class at every position, no ids (what top-k storage avoids)."""
    return grid[0] * grid[1] * num_classes * np.dtype(DTYPES[dtype]).itemsize


def imagenet_storage(topks: Sequence[int] = (1, 3, 5, 10), images: int = IMAGENET_TRAIN_IMAGES,
                     grid: Sequence[int] = RELEASED_GRID, num_classes: int = IMAGENET_CLASSES) -> pd.DataFrame:
    """Label-map storage for `images` training images: the packed store at every dtype and k, the released
    per-image format (fp32 logits and ids) at every k, and full maps. One row per (layout, topk, dtype) with
    bytes_per_image, gib (2^30 bytes) and basis: "formula", or for the compact store at top-5 (15x15 grids only)
    "measured on Lite0 maps" (its size depends on the maps)."""
    rows = [{"layout": "packed", "topk": k, "dtype": dtype, "bytes_per_image": bytes_per_image(k, grid, dtype)}
            for dtype in FIXED_DTYPES for k in topks]
    if COMPACT_TOPK in topks and tuple(grid) == RELEASED_GRID:
        rows.append({"layout": "packed", "topk": COMPACT_TOPK, "dtype": "compact",
                     "bytes_per_image": COMPACT_LITE0_BYTES_PER_IMAGE, "basis": "measured on Lite0 maps"})
    rows += [{"layout": "official", "topk": k, "dtype": "fp32", "bytes_per_image": official_bytes_per_image(k, grid)}
             for k in topks]
    rows.append({"layout": "full", "topk": num_classes, "dtype": "fp32",
                 "bytes_per_image": dense_bytes_per_image(grid, num_classes)})
    table = pd.DataFrame(rows)
    table["basis"] = table.get("basis", pd.Series(dtype=object)).fillna("formula")
    table["gib"] = table.bytes_per_image * images / GIB
    return table


def _median_seconds(step, repeats: int, warmup: int, device: torch.device) -> float:
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - started)
    return float(np.median(times))


def pooling_benchmark(cfg: Mapping, labelmaps, num_classes: int, repeats: int = 10, warmup: int = 3,
                      seed: int = 0) -> dict:
    """Median seconds of, on one batch of the student's recipe (train.batch_size / train.accum_steps, at most
    MAX_BENCHMARK_BATCH): reading its label maps from the store, LabelPooling them over RandomResizedCrop boxes,
    and one training step of the student (forward under the recipe's autocast, soft-target cross-entropy,
    backward, SGD update)."""
    train = cfg["train"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = max(1, min(int(train["batch_size"]) // int(train["accum_steps"]), MAX_BENCHMARK_BATCH))
    maps = open_labelmaps(labelmaps, num_classes)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(maps.num_images, size=min(batch, maps.num_images), replace=False))
    rows = np.resize(rows, batch)
    boxes = torch.as_tensor(sample_rrc_boxes(1000, 1000, batch, crop_rng(seed, 0), train["scale"], train["ratio"])
                            / 1000.0, dtype=torch.float32, device=device)
    values, ids = (t.to(device) for t in maps.read(rows))
    variant = cfg["supervision"]["variant"]

    torch.manual_seed(seed)
    model = create_model(train["model"], num_classes).to(device)
    memory = torch.channels_last if train["channels_last"] else torch.contiguous_format
    model = model.to(memory_format=memory)
    optimizer = torch.optim.SGD(model.parameters(), lr=float(train["lr"]), momentum=float(train["momentum"]))
    loss_fn = SoftTargetCrossEntropy()
    size = int(train["crop_size"])
    images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory)
    targets = pool_labels(values, ids, boxes, num_classes, variant)

    autocast = partial(autocast_for, device, bool(train["amp"]))

    def train_step():
        with autocast():
            logits = model(images)
        loss = loss_fn(logits.float(), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    read = _median_seconds(lambda: maps.read(rows), repeats, warmup, torch.device("cpu"))
    pool = _median_seconds(lambda: pool_labels(values, ids, boxes, num_classes, variant), repeats, warmup, device)
    step = _median_seconds(train_step, repeats, warmup, device)
    return {"batch": batch, "read_seconds": read, "pool_seconds": pool, "train_step_seconds": step,
            "device": device.type}
