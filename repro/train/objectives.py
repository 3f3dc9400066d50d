"""Objectives: one class per supervision mode, handed to the trainer.

Each declares the `supervision` fields that are part of its run's spec, whether it needs label maps (and whether
the trainer's crops carry them), whether it needs a teacher, and how a batch becomes (inputs, targets) for its
criterion. CutMix applies to any of them. A new objective is a subclass registered with `@register_objective`:
neither the trainer nor the pipeline changes.

original         one-hot label
label_smoothing  (1 - eps) one-hot + eps / C (the smoothing of Szegedy et al. as torch and timm implement it)
label_cleaning   one-hot, on the training images whose annotator agrees with the label (`training_images`)
relabel          LabelPooling of the crop's box on the image's label map (`repro.pooling`, variants of Table 2),
                 optionally mixed with the one-hot label (`mix_original`)
kd               the teacher's softmax on the crop at the teacher's input size; the student sees the crop resized
                 to its own size; no temperature and no ground-truth term (Appendix D.2)
multi_hot        Table 10's multi-label baseline: the image's multi-hot vector for every crop, binary cross-entropy
multilabel_machine   a machine annotator's dense logit map pooled over the crop, sigmoid: the BCE target
multilabel_oracle    the oracle map made from the masks pooled over the crop, read as `oracle_target`
                 (`repro.labelmaps.oracle`)
cutmix           on any mode: a box of a batch partner pasted in, targets mixed by the pasted area (CutMix, beta 1);
                 partners by a random permutation or the reversed batch (`cutmix_pairing`); with kd the teacher
                 labels the mixed image itself
"""
from __future__ import annotations

import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, ClassVar, ContextManager, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from repro.data.folders import ImageList
from repro.labelmaps.oracle import machine_targets, oracle_targets
from repro.pooling import mix_with_original, pool_labels
from repro.specs import added_option, digest_path, file_digest, without_former_defaults

CUTMIX_STREAM = 0x0C07  # keeps the CutMix draws apart from the crop draws of repro.crops.crop_rng
CUTMIX_FIELDS = ("cutmix_beta", "cutmix_off_last_epochs", "cutmix_pairing")
CUTMIX_PAIRINGS = ("permutation", "reversed")

OBJECTIVES: dict[str, type["Objective"]] = {}


def register_objective(cls: type["Objective"]) -> type["Objective"]:
    OBJECTIVES[cls.mode] = cls
    return cls


def objective_class(mode: str) -> type["Objective"]:
    if mode not in OBJECTIVES:
        raise ValueError(f"unknown supervision.mode {mode!r}: choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[mode]


def objective_spec(supervision: Mapping) -> dict:
    """The part of a run's spec that its objective reads: the mode, CutMix, and the mode's own fields."""
    cls = objective_class(supervision["mode"])
    keys = ("mode", "cutmix") + cls.fields + (CUTMIX_FIELDS if supervision["cutmix"] else ())
    spec = without_former_defaults("supervision", {key: supervision[key] for key in keys})
    for key in cls.file_fields:  # a user's file, by its digest
        if spec.get(key):
            spec[key] = file_digest(spec[key], f"supervision.{key}")
    return spec


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels.long(), num_classes).float()


def smoothed(labels: torch.Tensor, num_classes: int, eps: float) -> torch.Tensor:
    return one_hot(labels, num_classes) * (1.0 - eps) + eps / num_classes


def cutmix_partners(batch: int, rng: np.random.Generator, pairing: str) -> np.ndarray:
    """Each image's CutMix partner: a random permutation of the batch (the official code's torch.randperm, here
    drawn from the step's CutMix generator) or the batch reversed (timm's pairing)."""
    if pairing == "permutation":
        return rng.permutation(batch)
    if pairing == "reversed":
        return np.arange(batch)[::-1].copy()
    raise ValueError(f"unknown supervision.cutmix_pairing {pairing!r}: choose one of {', '.join(CUTMIX_PAIRINGS)}")


def cutmix(images: torch.Tensor, targets: torch.Tensor | None, rng: np.random.Generator, beta: float = 1.0, *,
           pairing: str) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """CutMix a batch with its partners (`cutmix_partners`): a box of image p(i) pasted into image i. The box is
    CutMix's (side sqrt(1 - lam), centre uniform, clipped) and lam is corrected to the area actually kept, so soft
    targets mix by area: lam * t_i + (1 - lam) * t_p(i). Returns (images, targets, lam)."""
    height, width = images.shape[-2:]
    lam = rng.beta(beta, beta)
    cut = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = rng.integers(height), rng.integers(width)
    y1, y2 = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + (cut_h + 1) // 2, 0, height)
    x1, x2 = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + (cut_w + 1) // 2, 0, width)
    lam = 1.0 - float((y2 - y1) * (x2 - x1)) / (height * width)
    partners = torch.from_numpy(cutmix_partners(len(images), rng, pairing)).to(images.device)
    mixed = images.clone()
    mixed[:, :, y1:y2, x1:x2] = images[partners, :, y1:y2, x1:x2]
    if targets is not None:
        targets = lam * targets + (1.0 - lam) * targets[partners]
    return mixed, targets, lam


def agreeing_indices(labelmaps, images: ImageList, num_classes: int, chunk: int = 4096) -> np.ndarray:
    """Label cleaning: indices of the images whose annotator's whole-image prediction (the argmax of the label map
    averaged over all positions) equals the original label."""
    from repro.labelmaps import open_labelmaps

    store = open_labelmaps(labelmaps, num_classes)
    predictions, _ = store.whole_image_top1(store.rows_for(images.relpaths), chunk)
    return np.flatnonzero(predictions == images.labels)


def listed_indices(path: str | os.PathLike, images: ImageList) -> np.ndarray:
    """Label cleaning by a released list (the paper's: the clean images Beyer et al. chose): indices of the images
    whose file name the list holds, one per line (a path's folders are ignored; ImageNet's names are unique)."""
    names = {Path(line.strip()).name for line in Path(path).read_text().splitlines() if line.strip()}
    keep = np.flatnonzero([Path(relpath).name in names for relpath in images.relpaths])
    if not len(keep):
        raise ValueError(f"supervision.clean_list {path}: none of its {len(names)} names is a training image's file "
                         "name (one per line, e.g. n01440764_10026.JPEG)")
    return keep


class Objective:
    """Student inputs and targets for a batch of `repro.data.TrainCrops` samples, on `device`.

    The crops arrive at `input_size` (the teacher's size under kd, else the student's); `__call__` returns
    (student images at crop_size, targets [B, C], seconds spent in a teacher's forward)."""

    mode: ClassVar[str]
    fields: ClassVar[tuple[str, ...]] = ()   # its `supervision` keys, part of the run's spec
    file_fields: ClassVar[tuple[str, ...]] = ()  # those that name a user's file, in the spec by its digest
    needs_labelmaps: ClassVar[bool] = False  # the pipeline hands it the training images' label-map store
    crops_carry_labelmaps: ClassVar[bool] = False  # each training crop arrives with its label-map cells
    needs_teacher: ClassVar[bool] = False

    def __init__(self, spec: Mapping, num_classes: int, crop_size: int, device: torch.device,
                 teacher: nn.Module | None = None, autocast: Callable[[], ContextManager] = nullcontext):
        if self.needs_teacher and teacher is None:
            raise ValueError(f"supervision mode {self.mode} needs a teacher")
        self.spec = dict(spec)
        self.num_classes = num_classes
        self.crop_size = crop_size
        self.device = device
        # a teacher labels: no dropout in its targets, no update of its BatchNorm statistics, no gradient
        self.teacher = None if teacher is None else teacher.eval().requires_grad_(False)
        self.autocast = autocast

    @classmethod
    def reads_labelmaps(cls, supervision: Mapping) -> bool:
        """Whether a run of this objective under `supervision` reads label maps: only then are they in its spec."""
        return cls.needs_labelmaps

    @staticmethod
    def training_images(spec: Mapping, images: ImageList, labelmaps, num_classes: int) -> tuple[ImageList, dict]:
        """The images this objective (its `spec`) trains on, and what choosing them measured (metrics of the
        run)."""
        return images, {}

    @property
    def input_size(self) -> int:
        return self.crop_size

    def criterion(self) -> nn.Module:
        return SoftTargetCrossEntropy()

    @property
    def cutmix_pairing(self) -> str:
        return added_option(self.spec, "supervision", "cutmix_pairing")

    def use_cutmix(self, epoch: int, epochs: int) -> bool:
        return bool(self.spec["cutmix"]) and epoch < epochs - int(self.spec["cutmix_off_last_epochs"])

    def targets(self, batch: Mapping, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def crop_maps(self, batch: Mapping) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's label maps (values, ids) and crop boxes on the device, for an objective whose crops carry
        them."""
        return (batch["labelmap_values"].to(self.device), batch["labelmap_ids"].to(self.device),
                batch["box"].to(self.device))

    def __call__(self, batch: Mapping, rng: np.random.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """rng: the CutMix generator of this step, or None for no CutMix."""
        images = batch["image"].to(self.device, non_blocking=True)
        labels = batch["label"].to(self.device, non_blocking=True)
        targets = self.targets(batch, labels)
        if rng is not None:
            images, targets, _ = cutmix(images, targets, rng, self.spec["cutmix_beta"], pairing=self.cutmix_pairing)
        return images, targets, 0.0


@register_objective
class Original(Objective):
    mode = "original"

    def targets(self, batch, labels):
        return one_hot(labels, self.num_classes)


@register_objective
class LabelSmoothing(Objective):
    mode = "label_smoothing"
    fields = ("smoothing",)

    def targets(self, batch, labels):
        return smoothed(labels, self.num_classes, float(self.spec["smoothing"]))


@register_objective
class LabelCleaning(Original):
    mode = "label_cleaning"
    needs_labelmaps = True

    fields = ("clean_list",)
    file_fields = ("clean_list",)

    @classmethod
    def reads_labelmaps(cls, supervision):
        return not supervision.get("clean_list")  # a list of kept images replaces the maps' agreement

    @staticmethod
    def training_images(spec, images, labelmaps, num_classes):
        listed = digest_path(spec.get("clean_list"))
        keep = listed_indices(listed, images) if listed else agreeing_indices(labelmaps, images, num_classes)
        return images.subset(keep), {"clean_fraction": len(keep) / len(images)}


@register_objective
class ReLabel(Objective):
    mode = "relabel"
    fields = ("variant", "mix_original")
    needs_labelmaps = True
    crops_carry_labelmaps = True

    def targets(self, batch, labels):
        targets = pool_labels(*self.crop_maps(batch), self.num_classes, self.spec["variant"])
        weight = float(self.spec["mix_original"])
        return mix_with_original(targets, labels, weight) if weight > 0 else targets


@register_objective
class KnowledgeDistillation(Objective):
    mode = "kd"
    fields = ("kd_teacher", "kd_input_size")
    needs_teacher = True

    @property
    def input_size(self) -> int:
        return int(self.spec["kd_input_size"] or self.crop_size)

    def __call__(self, batch, rng=None):
        images = batch["image"].to(self.device, non_blocking=True)
        if rng is not None:
            images, _, _ = cutmix(images, None, rng, self.spec["cutmix_beta"], pairing=self.cutmix_pairing)
        targets, teacher_seconds = self._teacher_targets(images)
        if images.shape[-1] != self.crop_size or images.shape[-2] != self.crop_size:
            images = F.interpolate(images, size=(self.crop_size, self.crop_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        return images, targets, teacher_seconds

    @torch.no_grad()
    def _teacher_targets(self, images: torch.Tensor) -> tuple[torch.Tensor, float]:
        cuda = images.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(images.device)
        started = time.perf_counter()
        # the teacher's softmax is the target: under mixed precision it runs in fp16, as the official code's apex O1,
        # since bf16's 8-bit mantissa moves its top probabilities by up to 6% (fp16's: 0.4%)
        with self.autocast(), torch.autocast("cuda", dtype=torch.float16,
                                             enabled=cuda and torch.is_autocast_enabled("cuda")):
            logits = self.teacher(images)
        targets = logits.float().softmax(dim=1)
        if cuda:
            torch.cuda.synchronize(images.device)
        return targets, time.perf_counter() - started


class BinaryCrossEntropy(nn.Module):
    """BCE on logits against soft targets in [0, 1], averaged over classes and images."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets)


@register_objective
class MultiHot(Objective):
    """Multi-label data (Table 10): each sample's label is its multi-hot vector."""
    mode = "multi_hot"

    def criterion(self) -> nn.Module:
        return BinaryCrossEntropy()

    def targets(self, batch, labels):
        return labels.float()


@register_objective
class MachineMaps(MultiHot):
    mode = "multilabel_machine"
    needs_labelmaps = True
    crops_carry_labelmaps = True

    def targets(self, batch, labels):
        return machine_targets(*self.crop_maps(batch), self.num_classes)


@register_objective
class OracleMaps(MultiHot):
    mode = "multilabel_oracle"
    fields = ("oracle_target", "oracle_threshold")
    needs_labelmaps = True
    crops_carry_labelmaps = True

    def targets(self, batch, labels):
        return oracle_targets(*self.crop_maps(batch), self.num_classes, self.spec["oracle_target"],
                              float(self.spec["oracle_threshold"]))
