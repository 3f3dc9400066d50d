"""Targets for every supervision mode (config section `supervision`), all as distributions over the classes that
the trainer fits with soft-target cross-entropy.

original         one-hot label
label_smoothing  (1 - eps) one-hot + eps / C (the smoothing of Szegedy et al. as torch and timm implement it)
label_cleaning   one-hot, on the training images whose annotator agrees with the label (see `agreeing_indices`)
relabel          LabelPooling of the crop's box on the image's label map (`repro.pooling`, variants of Table 2),
                 optionally mixed with the one-hot label (`mix_original`)
kd               the teacher's softmax on the crop at the teacher's input size; the student sees the crop resized
                 to its own size; no temperature and no ground-truth term (Appendix D.2)
cutmix           on any mode: a box of a batch partner pasted in, targets mixed by the pasted area (CutMix, beta 1);
                 with kd the teacher labels the mixed image itself
"""
from __future__ import annotations

import os
import time
from contextlib import nullcontext
from typing import Callable, ContextManager, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from repro.data.folders import ImageList
from repro.labelmaps.store import open_labelmaps
from repro.models import create_model, load_model
from repro.pooling import mix_with_original, pool_labels

MODES = ("original", "label_smoothing", "label_cleaning", "relabel", "kd")
CUTMIX_STREAM = 0x0C07  # keeps the CutMix draws apart from the crop draws of repro.crops.crop_rng


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels.long(), num_classes).float()


def smoothed(labels: torch.Tensor, num_classes: int, eps: float) -> torch.Tensor:
    return one_hot(labels, num_classes) * (1.0 - eps) + eps / num_classes


def cutmix(images: torch.Tensor, targets: torch.Tensor | None, rng: np.random.Generator, beta: float = 1.0
           ) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """CutMix a batch with itself reversed (timm's pairing): a box of image B-1-i pasted into image i. The box is
    CutMix's (side sqrt(1 - lam), centre uniform, clipped) and lam is corrected to the area actually kept, so soft
    targets mix by area: lam * t_i + (1 - lam) * t_(B-1-i). Returns (images, targets, lam)."""
    height, width = images.shape[-2:]
    lam = rng.beta(beta, beta)
    cut = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = rng.integers(height), rng.integers(width)
    y1, y2 = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + (cut_h + 1) // 2, 0, height)
    x1, x2 = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + (cut_w + 1) // 2, 0, width)
    lam = 1.0 - float((y2 - y1) * (x2 - x1)) / (height * width)
    mixed = images.clone()
    mixed[:, :, y1:y2, x1:x2] = images.flip(0)[:, :, y1:y2, x1:x2]
    if targets is not None:
        targets = lam * targets + (1.0 - lam) * targets.flip(0)
    return mixed, targets, lam


class Renormalized(nn.Module):
    """A pretrained teacher fed crops normalised with ImageNet's mean and std, re-normalised to its own."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        view = (1, -1, 1, 1)
        mean, std = torch.tensor(mean).view(view), torch.tensor(std).view(view)
        default_mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(view)
        default_std = torch.tensor(IMAGENET_DEFAULT_STD).view(view)
        self.register_buffer("scale", default_std / std, persistent=False)
        self.register_buffer("shift", (default_mean - mean) / std, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images * self.scale + self.shift)


def build_teacher(spec: Mapping, num_classes: int) -> nn.Module:
    """A KD teacher from `supervision.kd_teacher`: {"name", "kwargs", "checkpoint"} loads a model saved by the
    suite (e.g. the annotator, trained on the crops' normalisation); without a checkpoint, timm's pretrained
    weights of that name, re-normalised if they expect other constants than ImageNet's."""
    if not spec:
        raise ValueError("supervision mode kd needs supervision.kd_teacher (or a teacher model)")
    if spec.get("checkpoint"):
        teacher = load_model(spec["checkpoint"])
    else:
        teacher = create_model(spec, num_classes, pretrained=True)
        mean, std = teacher.pretrained_cfg.get("mean"), teacher.pretrained_cfg.get("std")
        if (mean, std) != (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD):
            teacher = Renormalized(teacher, mean, std)
    return teacher.eval().requires_grad_(False)


def agreeing_indices(labelmaps: str | os.PathLike, images: ImageList, num_classes: int, chunk: int = 4096
                     ) -> np.ndarray:
    """Label cleaning: indices of the images whose annotator's whole-image prediction (the argmax of the label map
    averaged over all positions) equals the original label."""
    store = open_labelmaps(labelmaps, num_classes)
    predictions, _ = store.whole_image_top1(store.rows_for(images.relpaths), chunk)
    return np.flatnonzero(predictions == images.labels)


class Supervision:
    """Student inputs and targets for a batch of `repro.data.TrainCrops` samples, on `device`.

    The crops arrive at `input_size` (the teacher's size under kd, else the student's); `__call__` returns
    (student images at crop_size, targets [B, C] summing to 1, seconds spent in the teacher's forward)."""

    def __init__(self, sup_cfg: Mapping, num_classes: int, crop_size: int, device: torch.device,
                 teacher: nn.Module | None = None, autocast: Callable[[], ContextManager] = nullcontext):
        self.mode = sup_cfg["mode"]
        if self.mode not in MODES:
            raise ValueError(f"unknown supervision mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.mode == "kd" and teacher is None:
            raise ValueError("supervision mode kd needs a teacher")
        self.cfg = dict(sup_cfg)
        self.num_classes = num_classes
        self.crop_size = crop_size
        self.device = device
        self.teacher = teacher
        self.autocast = autocast

    @property
    def input_size(self) -> int:
        return int(self.cfg["kd_input_size"] or self.crop_size) if self.mode == "kd" else self.crop_size

    def use_cutmix(self, epoch: int, epochs: int) -> bool:
        return bool(self.cfg["cutmix"]) and epoch < epochs - int(self.cfg["cutmix_off_last_epochs"])

    def __call__(self, batch: Mapping, rng: np.random.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """rng: the CutMix generator of this step, or None for no CutMix."""
        images = batch["image"].to(self.device, non_blocking=True)
        labels = batch["label"].to(self.device, non_blocking=True)
        if self.mode == "kd":
            if rng is not None:
                images, _, _ = cutmix(images, None, rng, self.cfg["cutmix_beta"])
            targets, teacher_seconds = self._teacher_targets(images)
            if images.shape[-1] != self.crop_size or images.shape[-2] != self.crop_size:
                images = F.interpolate(images, size=(self.crop_size, self.crop_size), mode="bilinear",
                                       align_corners=False, antialias=True)
            return images, targets, teacher_seconds
        targets = self._label_targets(batch, labels)
        if rng is not None:
            images, targets, _ = cutmix(images, targets, rng, self.cfg["cutmix_beta"])
        return images, targets, 0.0

    def _label_targets(self, batch: Mapping, labels: torch.Tensor) -> torch.Tensor:
        if self.mode == "label_smoothing":
            return smoothed(labels, self.num_classes, float(self.cfg["smoothing"]))
        if self.mode == "relabel":
            targets = pool_labels(batch["labelmap_values"].to(self.device), batch["labelmap_ids"].to(self.device),
                                  batch["box"].to(self.device), self.num_classes, self.cfg["variant"])
            weight = float(self.cfg["mix_original"])
            return mix_with_original(targets, labels, weight) if weight > 0 else targets
        return one_hot(labels, self.num_classes)

    @torch.no_grad()
    def _teacher_targets(self, images: torch.Tensor) -> tuple[torch.Tensor, float]:
        cuda = images.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(images.device)
        started = time.perf_counter()
        with self.autocast():
            logits = self.teacher(images)
        targets = logits.float().softmax(dim=1)
        if cuda:
            torch.cuda.synchronize(images.device)
        return targets, time.perf_counter() - started
