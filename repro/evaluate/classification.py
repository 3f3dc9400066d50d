"""Classification metrics on every evaluation set: ImageNet val top-1/top-5 and per-class accuracy, the multi-label
benchmarks on the same predictions (ReaL, the stricter Shankar-style set: top-1 in the label set, images with an
empty set excluded) and the three ImageNetV2 variants. Accuracies are percentages.

Under torch.distributed each rank predicts a disjoint shard (image i on rank i % world, no padding) and the shards
are gathered, so every image is counted exactly once and every rank returns the same numbers.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Subset

from repro.data.datasets import EvalImages, eval_batches
from repro.data.folders import ImageList
from repro.data.imagenet import EvalSet
from repro.data.transforms import EvalView
from repro.imagefiles import collate_readable
from repro.models import unwrap


def amp_dtype() -> torch.dtype:
    """bf16 on GPUs that compute it natively (compute capability 8+), fp16 (with a GradScaler) on older ones: torch
    reports bf16 as supported on a V100 too, where it is emulated, and slow."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def autocast_for(device: torch.device, amp: bool):
    """`amp_dtype` autocast on a GPU; nothing on CPU."""
    if not (amp and device.type == "cuda"):
        return nullcontext()
    return torch.autocast("cuda", dtype=amp_dtype())


@torch.no_grad()
def predict_logits(model: nn.Module, images: ImageList, *, size: int, crop_pct: float, batch_size: int = 256,
                   workers: int = 0, amp: bool = False, channels_last: bool = False,
                   interpolation: str = "bilinear") -> torch.Tensor:
    """Logits [N, C] (float32, CPU) of every image of `images` in list order, from the eval view (resize to
    size / crop_pct, centre crop; a multi-label set's images resized whole). The model is put in eval mode and runs where its parameters are; a DDP
    wrapper is bypassed, since its forward would sync buffers across ranks whose shards differ in length."""
    model = unwrap(model)
    device = next(model.parameters()).device
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    # a multi-label set (multi-hot labels) is viewed whole: a centre crop would cut objects at the edges of a
    # non-square image out of the view while its label keeps them
    view = EvalView(size, crop_pct, whole=images.labels.ndim == 2, interpolation=interpolation)
    shard = Subset(EvalImages(images, view), range(rank, len(images), world))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", collate_fn=collate_readable)
    model.eval()
    indices, logits = [], []
    for batch, _, index in eval_batches(loader):
        batch = batch.to(device, non_blocking=True)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast_for(device, amp):
            logits.append(model(batch).float().cpu())
        indices.append(index)
    indices = torch.cat(indices) if indices else torch.zeros(0, dtype=torch.int64)
    logits = torch.cat(logits) if logits else torch.zeros(0, 0)
    if world > 1:
        shards = [None] * world
        dist.all_gather_object(shards, (indices, logits))
        indices = torch.cat([s[0] for s in shards])
        logits = torch.cat([s[1] for s in shards if len(s[0])])
    if not torch.equal(torch.sort(indices).values, torch.arange(len(images))):
        raise RuntimeError(f"evaluation covered {len(indices)} predictions for {len(images)} images")
    out = torch.empty_like(logits)
    out[indices] = logits
    return out


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float | None]:
    """Top-1 accuracy (%) of each class; None for a class without images."""
    correct = np.bincount(labels, weights=(predictions == labels).astype(np.float64), minlength=num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    return [100.0 * float(c) / int(n) if n else None for c, n in zip(correct, counts)]


def multilabel_accuracy(predictions: np.ndarray, label_sets: Sequence[Sequence[int]]) -> tuple[float, int]:
    """(% of images whose top-1 prediction is in their label set, number of images counted); images with an empty
    set are excluded, as in ReaL."""
    hits = [int(p) in set(s) for p, s in zip(predictions, label_sets) if len(s)]
    return (100.0 * sum(hits) / len(hits) if hits else float("nan")), len(hits)


def multilabel_set_metrics(name: str, logits: torch.Tensor, multi_hot: np.ndarray) -> dict:
    """A multi-label set (Table 10) scored by mAP over classes on the sigmoid scores: `<name>_map`, the per-class APs
    `<name>_per_class_ap` (None for a class without positives), `<name>_classes_without_positives`, `<name>_images`."""
    from repro.data.coco import mean_average_precision

    scored = mean_average_precision(torch.sigmoid(logits).numpy(), multi_hot)
    return {f"{name}_map": scored["map"], f"{name}_per_class_ap": scored["per_class_ap"],
            f"{name}_classes_without_positives": scored["classes_without_positives"], f"{name}_images": len(multi_hot)}


def headline(metrics: Mapping, name: str) -> str:
    """An evaluation set's main number for a log line: mAP of a multi-label set, else top-1."""
    if f"{name}_map" in metrics:
        return f"{name} mAP {metrics[f'{name}_map']:.2f}"
    return f"{name} top-1 {metrics[f'{name}_top1']:.2f}"


def set_metrics(eval_set: EvalSet, logits: torch.Tensor) -> dict:
    """A multi-hot set's metrics (`multilabel_set_metrics`), or `<name>_top1`, `<name>_top5`, `<name>_images`, each
    multi-label benchmark's `<key>_top1` and `<key>_images`, and for ImageNet val the per-class top-1 list
    `imagenet_per_class_top1`."""
    labels = eval_set.images.labels
    if labels.ndim == 2:
        return multilabel_set_metrics(eval_set.name, logits, labels)
    k = min(5, logits.shape[1])
    topk = logits.topk(k, dim=1).indices.numpy()
    top1 = topk[:, 0]
    name = eval_set.name
    metrics = {f"{name}_top1": 100.0 * float(np.mean(top1 == labels)),
               f"{name}_top5": 100.0 * float(np.mean((topk == labels[:, None]).any(axis=1))),
               f"{name}_images": len(labels)}
    for key, sets in eval_set.label_sets.items():
        metrics[f"{key}_top1"], metrics[f"{key}_images"] = multilabel_accuracy(top1, sets)
    if name == "imagenet":
        metrics["imagenet_per_class_top1"] = per_class_accuracy(top1, labels, logits.shape[1])
    return metrics


def evaluate_model(model: nn.Module, eval_sets: Sequence[EvalSet], *, size: int, crop_pct: float,
                   batch_size: int = 256, workers: int = 0, amp: bool = False, channels_last: bool = False) -> dict:
    """The metrics of every set in `eval_sets` (see `set_metrics`) in one dict."""
    metrics = {}
    for eval_set in eval_sets:
        logits = predict_logits(model, eval_set.images, size=size, crop_pct=crop_pct, batch_size=batch_size,
                                workers=workers, amp=amp, channels_last=channels_last)
        metrics.update(set_metrics(eval_set, logits))
    return metrics


def eval_settings(train_cfg: Mapping, resources) -> dict:
    """The keyword arguments of `evaluate_model` / `predict_logits` that a `train` section and the run's
    `repro.runs.Resources` fix."""
    return {"size": train_cfg["eval_size"], "crop_pct": train_cfg["eval_crop_pct"],
            "batch_size": resources.batch_size_eval, "workers": resources.workers,
            "amp": train_cfg["amp"], "channels_last": train_cfg["channels_last"]}
