"""Models come from timm: one factory for a model spec {"name", "kwargs"}, and one checkpoint format for weights.

A saved model is `{"model": spec, "num_classes": C, "state_dict": ...}`, enough to rebuild it without the run
that trained it (the annotator's checkpoint is read this way by the label-map generator).
"""
from __future__ import annotations

import os
from typing import Mapping

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from repro.atomic import write_stream_atomic

MODEL_FILE = "model.pt"  # a run's final model, in `save_model`'s format


def create_model(spec: Mapping, num_classes: int, pretrained: bool = False, **overrides) -> nn.Module:
    kwargs = {**dict(spec.get("kwargs") or {}), **overrides}
    return timm.create_model(spec["name"], pretrained=pretrained, num_classes=num_classes, **kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel (or the model itself)."""
    return getattr(model, "module", model)


def save_model(model: nn.Module, spec: Mapping, num_classes: int, path: str | os.PathLike) -> None:
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    checkpoint = {"model": dict(spec), "num_classes": num_classes, "state_dict": state}
    write_stream_atomic(path, lambda file: torch.save(checkpoint, file))


def load_model(path: str | os.PathLike, **overrides) -> nn.Module:
    """Rebuild a model saved by `save_model`; overrides (e.g. output_stride=8) go to timm.create_model."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = create_model(saved["model"], saved["num_classes"], **overrides)
    model.load_state_dict(saved["state_dict"])
    return model.eval()


class Renormalized(nn.Module):
    """A pretrained model fed crops normalised with ImageNet's mean and std, re-normalised to its own."""

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


def pretrained_model(spec: Mapping, num_classes: int, pretrained: bool = True) -> nn.Module:
    """timm's weights of that name, taking crops normalised as the suite's are (re-normalised if the weights
    expect other constants than ImageNet's)."""
    model = create_model(spec, num_classes, pretrained=pretrained)
    mean, std = model.pretrained_cfg.get("mean"), model.pretrained_cfg.get("std")
    if (mean, std) != (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD):
        model = Renormalized(model, mean, std)
    return model


# EfficientNet's compound scaling (channel, depth multipliers) for B0..B3, as in the EfficientNet paper.
EFFICIENTNET_SCALING = {"b0": (1.0, 1.0), "b1": (1.0, 1.1), "b2": (1.1, 1.2), "b3": (1.2, 1.4)}
NARROW_WIDTH = 0.25


def _zero_init_residual_branches(model: nn.Module) -> None:
    """Zero the last BatchNorm's scale in every EfficientNet block with a skip connection, so each block starts as
    the identity (what timm's ResNets do by default with zero_init_last)."""
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual

    last_norm = {DepthwiseSeparableConv: "bn2", InvertedResidual: "bn3"}
    for block in model.modules():
        name = last_norm.get(type(block))
        if name is not None and block.has_skip:
            nn.init.zeros_(getattr(block, name).weight)


def _register_narrow_efficientnets() -> None:
    """`efficientnet_bN_narrow`: B0..B3 at a quarter of their width, keeping the family's compound scaling.

    timm's own B0..B3 fix their width, and the embedded scale needs CPU-sized members of the same family. With
    `zero_init_last` their residual blocks start as the identity: under timm's own initialisation they stay near
    chance for the few hundred updates of the embedded recipe.
    """
    from timm.models import efficientnet, register_model

    for variant, (width, depth) in EFFICIENTNET_SCALING.items():
        def build(pretrained=False, zero_init_last=False, _width=width, _depth=depth, _variant=variant, **kwargs):
            model = efficientnet._gen_efficientnet(f"efficientnet_{_variant}", channel_multiplier=_width * NARROW_WIDTH,
                                                   depth_multiplier=_depth, pretrained=False, **kwargs)
            if zero_init_last:
                _zero_init_residual_branches(model)
            return model
        build.__name__ = f"efficientnet_{variant}_narrow"
        register_model(build)


_register_narrow_efficientnets()
