"""Training throughput of the proxy profile's two classifiers on random data: images/s of a full optimizer step
(forward, soft-target cross-entropy, backward, SGD update) in both memory layouts, and of the per-image crop
pipeline (RandomResizedCrop, flip, colour jitter, normalisation) on one core.

    .venv/bin/python benchmarks/bench_train_step.py [--threads 2] [--steps 5] [--profile proxy] [--classes 54]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from timm.loss import SoftTargetCrossEntropy

from repro.config import deep_update, profile_config
from repro.data.transforms import TrainCrop
from repro.models import create_model
from repro.train.trainer import make_optimizer


def step_throughput(train_cfg: dict, num_classes: int, steps: int, channels_last: bool, warmup: int = 1) -> float:
    """Median images/s over `steps` timed updates (the first updates of a model are slow: oneDNN builds its
    kernels, so `warmup` updates are not timed)."""
    torch.manual_seed(0)
    model = create_model(train_cfg["model"], num_classes).train()
    size, batch = int(train_cfg["crop_size"]), int(train_cfg["batch_size"])
    images = torch.randn(batch, 3, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, train_cfg)
    loss_fn = SoftTargetCrossEntropy()
    targets = torch.softmax(torch.randn(batch, num_classes), dim=1)
    seconds = []
    for _ in range(warmup + steps):
        started = time.perf_counter()
        loss_fn(model(images), targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - started)
    return batch / float(np.median(seconds[warmup:]))


def crop_throughput(train_cfg: dict, image_size: int, count: int = 500) -> float:
    crop = TrainCrop(train_cfg["crop_size"], train_cfg["scale"], train_cfg["ratio"], train_cfg["hflip"],
                     train_cfg["color_jitter"])
    image = torch.randint(0, 256, (3, image_size, image_size), dtype=torch.uint8)
    started = time.perf_counter()
    for i in range(count):
        crop(image, np.random.default_rng(i))
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="proxy")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--classes", type=int, default=54, help="the world has about 54 classes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = profile_config(args.profile)
    num_classes = args.classes
    image_size = int(cfg["world"]["image_size"]) if cfg["world"] else 256
    annotator = cfg["annotator"]
    runs = {"student": cfg["train"],
            "annotator": deep_update(cfg["train"], {**annotator.get("train", {}), "model": annotator["model"]})}
    print(f"profile {args.profile}, {args.threads} threads, {num_classes} classes, torch {torch.__version__}")
    for name, train_cfg in runs.items():
        steps = {layout: step_throughput(train_cfg, num_classes, args.steps, layout == "channels_last")
                 for layout in ("contiguous", "channels_last")}
        crops = crop_throughput(train_cfg, image_size)
        print(f"{name:9s} {train_cfg['model']['name']} {train_cfg['model']['kwargs']} crop {train_cfg['crop_size']} "
              f"batch {train_cfg['batch_size']}: train step "
              + ", ".join(f"{v:.0f} img/s ({k})" for k, v in steps.items())
              + f"; crop pipeline {crops:.0f} img/s per core ({image_size} px images)", flush=True)

if __name__ == "__main__":
    main()
