"""Section 3.3's cost accounting: label-map storage at ImageNet scale, and LabelPooling's time beside a training
step of the student (an in-process micro-benchmark). Generation and training times come from the cached runs.

The cost regime (`flops_regime`): what the annotator's labelling pass and each KD teacher's forward cost per
training image against one training step of the student, counted in FLOPs from the models' shapes alone (no
weights), so the paper's models (EfficientNet-L2 at 475 px, B1-B7 at 240-600 px, ResNet-50 at 224 px) and a
profile's are compared on one footing.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable, Mapping, Sequence

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
# a training step of the student: its forward pass and a backward pass of about twice the forward's FLOPs
TRAIN_STEP_FORWARDS = 3
DEFAULT_OUTPUT_STRIDE = 32  # what timm's classifiers have; label maps at another stride dilate the last stages
COMPACT_TOPK = 5


def device_seconds(metrics: Mapping, key: str = "train_seconds") -> float:
    """A run's `key` time in device-seconds (GPU-seconds under torchrun): the wall time times the processes that
    ran it, so that a run on eight GPUs, one on a single GPU (a label-map pass: rank 0 alone) and the paper's
    GPU-hours compare. The trainer records it epoch by epoch (`device_seconds`: right for a run resumed on another
    number of GPUs); a run recorded before that, by its last session's `world_size` (none: one process)."""
    recorded = metrics.get("device_seconds") or {}
    return float(recorded[key]) if key in recorded else float(metrics[key]) * int(metrics.get("world_size", 1))


def official_bytes_per_image(topk: int, grid: Sequence[int]) -> int:
    return topk * grid[0] * grid[1] * OFFICIAL_BYTES_PER_ENTRY


def dense_bytes_per_image(grid: Sequence[int], num_classes: int, dtype: str = "fp32") -> int:
    """A full map: every class at every position, no ids (what top-k storage avoids)."""
    return grid[0] * grid[1] * num_classes * np.dtype(DTYPES[dtype]).itemsize


@lru_cache(maxsize=1)
def compact_bytes_on_lite0() -> int:
    """A compact store's size depends on its maps: bytes per image (records, row table and scales) of
    EfficientNet-Lite0's top-5 15x15 maps of 4 real photos (repro.labelmaps.examples.example_label_maps, 75-121
    classes per image), the nearest to the released EfficientNet-L2 maps this project can measure offline; measured
    by writing them to a compact store (a second or two)."""
    from repro.labelmaps.examples import example_label_maps
    from repro.labelmaps.compact import image_bytes
    from repro.labelmaps.packed import write_packed

    _, values, ids = example_label_maps(topk=COMPACT_TOPK)
    with tempfile.TemporaryDirectory() as folder:
        store = write_packed(Path(folder) / "lite0", [f"train/photo/{i}.JPEG" for i in range(len(values))], values,
                             ids, dtype="compact")
        return int(round(image_bytes(open_labelmaps(store).records().rows).mean()))


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
                     "bytes_per_image": compact_bytes_on_lite0(), "basis": "measured on Lite0 maps"})
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
                      seed: int = 0, wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None) -> dict:
    """Median seconds of, on one batch of the student's recipe (train.batch_size / train.accum_steps, at most
    MAX_BENCHMARK_BATCH): reading its label maps from the store, LabelPooling them over RandomResizedCrop boxes,
    and one training step of the student (forward under the recipe's autocast, soft-target cross-entropy,
    backward, SGD update). `wrap` wraps the model for the step (e.g. in DistributedDataParallel)."""
    train = cfg["train"]
    # under torchrun each process times on its own GPU: on cuda:0 all at once they would time each other
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
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
    if wrap is not None:
        model = wrap(model)
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


def forward_flops(model: Mapping, size: int, num_classes: int, output_stride: int = DEFAULT_OUTPUT_STRIDE) -> float:
    """FLOPs (a multiply-add counts as two) of one forward pass of one size x size image through `model` (a model
    spec: timm name and kwargs) with a head of `num_classes` at `output_stride`, counted by torch's
    FlopCounterMode on the meta device: the model is built from its shapes alone, no weights are read and nothing
    is computed."""
    return _forward_flops(model["name"], json.dumps(dict(model.get("kwargs") or {}), sort_keys=True),
                          int(num_classes), int(size), int(output_stride))


@lru_cache(maxsize=None)
def _forward_flops(name: str, kwargs: str, num_classes: int, size: int, output_stride: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    stride = {} if output_stride == DEFAULT_OUTPUT_STRIDE else {"output_stride": output_stride}
    with torch.device("meta"):
        model = create_model({"name": name, "kwargs": json.loads(kwargs)}, num_classes, **stride).eval()
        image = torch.empty(1, 3, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(image)
    return float(counter.get_total_flops())


def flops_regime(cfg: Mapping, num_classes: int) -> dict:
    """What the runs of `cfg` cost per training image, in FLOPs: the student's training step at its crop size
    (TRAIN_STEP_FORWARDS forward passes), the annotator's labelling forward (labelmap.input_size at its
    output_stride), and each Figure 6 KD teacher's forward at the resolution it is fed (`kd_changes`), smallest
    teacher first; with the student's epochs and the resolutions.

    Returns {"epochs", "student", "student_crop", "student_step", "annotator", "labelling_size", "annotator_forward",
    "teachers": {name: {"model", "size", "forward"}}}."""
    from repro.config import with_changes
    from repro.pipeline import teacher_input_size
    from repro.sweeps import kd_teachers, model_label

    train, labelmap = cfg["train"], cfg["labelmap"]
    crop = int(train["crop_size"])
    teachers = {}
    for name, changes in kd_teachers(cfg).items():
        teacher = with_changes(cfg, changes)
        size = teacher_input_size(teacher)
        teachers[name] = {"model": teacher["annotator"]["model"]["name"], "size": size,
                          "forward": forward_flops(teacher["annotator"]["model"], size, num_classes)}
    return {"epochs": int(train["epochs"]), "student": model_label(train["model"]), "student_crop": crop,
            "student_step": TRAIN_STEP_FORWARDS * forward_flops(train["model"], crop, num_classes),
            "annotator": model_label(cfg["annotator"]["model"]), "labelling_size": int(labelmap["input_size"]),
            "annotator_forward": forward_flops(cfg["annotator"]["model"], labelmap["input_size"], num_classes,
                                               labelmap["output_stride"]),
            "teachers": teachers}


REGIME_COLUMNS = ["quantity", "basis", "paper", "reproduced", "paper_setting", "reproduced_setting"]


def _ordinal(rank: int) -> str:
    return "largest" if rank == 1 else f"{rank}{ {2: 'nd', 3: 'rd'}.get(rank, 'th')}_largest"


def regime_table(paper: Mapping, here: Mapping, paper_wall: Mapping, here_wall: Mapping) -> pd.DataFrame:
    """The paper's cost ratios beside a profile's, one row per quantity (REGIME_COLUMNS).

    paper, here: `flops_regime` of the paper's config and of the profile's. paper_wall, here_wall: measured wall
    times (absent or NaN where not measured): "generation_share" (label-map generation / one original-label
    training), "generation_relabel_epochs" (generation / one ReLabel epoch) and "kd_over_relabel" ({teacher: a KD
    student's training time / the ReLabel student's, over as many epochs}). KD teachers are paired largest first
    (the paper has four, a profile may have fewer). `break_even_epochs`: after how many epochs the teacher's
    forward passes, what a KD epoch costs beyond a ReLabel epoch, add up to the one-time label-map generation."""
    nan = float("nan")
    rows = []

    def add(quantity, basis, values, settings):
        rows.append(dict(zip(REGIME_COLUMNS, (quantity, basis, *map(float, values), *settings))))

    regimes, walls = (paper, here), (paper_wall, here_wall)
    students = [f"{r['student']} @{r['student_crop']}" for r in regimes]
    annotators = [f"{r['annotator']} @{r['labelling_size']}" for r in regimes]
    labelling = [f"{a} / {s}" for a, s in zip(annotators, students)]
    add("student_epochs", "schedule", [r["epochs"] for r in regimes], students)
    add("labelling_size_over_student_crop", "pixels", [r["labelling_size"] / r["student_crop"] for r in regimes],
        labelling)
    add("annotator_forward_per_student_step", "FLOPs", [r["annotator_forward"] / r["student_step"] for r in regimes],
        labelling)
    add("generation_share_of_training", "FLOPs",
        [r["annotator_forward"] / (r["epochs"] * r["student_step"]) for r in regimes],
        [f"one labelling pass / {r['epochs']} epochs" for r in regimes])
    add("generation_share_of_training", "wall time", [w.get("generation_share", nan) for w in walls],
        ["GPU-hours (Section 3.3)", "seconds (cached runs)"])
    teachers = [list(r["teachers"].items())[::-1] for r in regimes]  # largest first
    for rank in range(1, max(map(len, teachers)) + 1):
        chosen = [t[rank - 1] if rank <= len(t) else (None, None) for t in teachers]
        settings = [f"{name} @{t['size']}" if name else "" for name, t in chosen]
        forward = [t["forward"] / r["student_step"] if t else nan for (_, t), r in zip(chosen, regimes)]
        kd_over_relabel = [w.get("kd_over_relabel", {}).get(name, nan) if name else nan
                           for (name, _), w in zip(chosen, walls)]
        prefix = f"kd_teacher_{_ordinal(rank)}"
        add(f"{prefix}_forward_per_student_step", "FLOPs", forward, settings)
        add(f"{prefix}_kd_epoch_over_relabel_epoch", "wall time", kd_over_relabel, settings)
        add(f"{prefix}_break_even_epochs", "FLOPs",
            [r["annotator_forward"] / r["student_step"] / f for f, r in zip(forward, regimes)], settings)
        add(f"{prefix}_break_even_epochs", "wall time",
            [w.get("generation_relabel_epochs", nan) / (k - 1.0) if k > 1.0 else nan
             for k, w in zip(kd_over_relabel, walls)], settings)
    return pd.DataFrame(rows, columns=REGIME_COLUMNS)
