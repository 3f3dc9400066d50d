"""Models come from timm: one factory for a model spec {"name", "kwargs"}, and one checkpoint format for weights.

A saved model is `{"model": spec, "num_classes": C, "state_dict": ...}`, enough to rebuild it without the run
that trained it (the annotator's checkpoint is read this way by the label-map generator).
"""
from __future__ import annotations

import os
from typing import Mapping

import timm
import torch
from torch import nn


def create_model(spec: Mapping, num_classes: int, pretrained: bool = False, **overrides) -> nn.Module:
    kwargs = {**dict(spec.get("kwargs") or {}), **overrides}
    return timm.create_model(spec["name"], pretrained=pretrained, num_classes=num_classes, **kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel (or the model itself)."""
    return getattr(model, "module", model)


def save_model(model: nn.Module, spec: Mapping, num_classes: int, path: str | os.PathLike) -> None:
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    tmp = f"{path}.tmp"
    torch.save({"model": dict(spec), "num_classes": num_classes, "state_dict": state}, tmp)
    os.replace(tmp, path)


def load_model(path: str | os.PathLike, **overrides) -> nn.Module:
    """Rebuild a model saved by `save_model`; overrides (e.g. output_stride=8) go to timm.create_model."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = create_model(saved["model"], saved["num_classes"], **overrides)
    model.load_state_dict(saved["state_dict"])
    return model.eval()
