"""Models come from timm: one factory for a model spec {"name", "kwargs"}, and one checkpoint format for weights.

A saved model is `{"model": spec, "num_classes": C, "state_dict": ...}`, enough to rebuild it without the run
that trained it (the annotator's checkpoint is read this way by the label-map generator).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

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


def is_saved_model(saved) -> bool:
    """Whether a loaded checkpoint is one `save_model` wrote (it records its own architecture and classes)."""
    return isinstance(saved, Mapping) and {"model", "num_classes", "state_dict"} <= set(saved)


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


def renormalized(model: nn.Module) -> nn.Module:
    """The model taking crops normalised as the suite's are: wrapped where its weights expect other constants
    than ImageNet's mean and std."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean", IMAGENET_DEFAULT_MEAN), cfg.get("std", IMAGENET_DEFAULT_STD)
    if (tuple(mean), tuple(std)) != (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD):
        return Renormalized(model, mean, std)
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


# --- classifiers from anywhere: the suite's checkpoints, plain timm / torchvision state dicts, the Hub ---------

def state_dict_of(saved, path) -> dict:
    """The state dict inside a saved file: the file itself, or its "state_dict" / "model" entry; DDP's "module."
    prefix removed."""
    state = saved
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path} holds no state dict (tensors by parameter name, or a {{'state_dict': ...}} or "
                         "{'model': ...} wrapper of one)")
    return {key.removeprefix("module."): value for key, value in state.items()}


def _classifier_name(model: nn.Module) -> str:
    head = model.get_classifier()
    return next(name for name, module in model.named_modules() if module is head)


def load_classifier(source: str | os.PathLike, spec: Mapping | None = None, pretrained: bool = False,
                    num_classes: int | None = None, **overrides) -> nn.Module:
    """A classifier from a checkpoint saved by `save_model`, from a plain state dict of the timm architecture
    `spec` (timm's or torchvision's own files: torchvision's ResNets share timm's parameter names), or by timm
    name (`pretrained`: the Hub's weights, which must be cached or reachable). The head keeps its saved classes
    (num_classes: a timm name's head, None for timm's default as pretrained weights have it); overrides (e.g.
    output_stride=8) go to timm.create_model."""
    path = Path(source)
    if not path.is_file():
        if path.suffix in (".pt", ".pth", ".bin", ".safetensors") or os.sep in str(source):
            raise FileNotFoundError(f"checkpoint {source} not found")
        if not timm.is_model(str(source)):
            raise ValueError(f"{source!r} is neither a checkpoint file nor a timm model name")
        if pretrained:
            check_hub_weights(str(source))
        return create_model({"name": str(source), "kwargs": dict((spec or {}).get("kwargs") or {})},
                            num_classes=num_classes, pretrained=pretrained, **overrides).eval()
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if is_saved_model(saved):
        return load_model(path, **overrides)
    if spec is None:
        raise ValueError(f"{path} is a plain state dict: name its timm architecture (annotator.model, or --arch)")
    state, head = timm_state(saved, path, spec)
    model = create_model(spec, num_classes=head, **overrides)
    load_fitting(model, state, path, spec)
    return model.eval()


def timm_state(saved, path: Path, spec: Mapping) -> tuple[dict, int]:
    """`saved`, a plain state dict of timm's architecture `spec`, in timm's parameter names (`timm_names`), and the
    class count of its head."""
    with torch.device("meta"):  # names and shapes only: no time spent initialising a large model's weights
        probe = create_model(spec, num_classes=None)
    state = timm_names(state_dict_of(saved, path), probe)
    head_key = f"{_classifier_name(probe)}.weight"
    if head_key not in state:
        raise ValueError(f"{path} has no {head_key}: is it a {spec['name']} state dict? (first keys: "
                         f"{', '.join(list(state)[:3])})")
    return state, int(state[head_key].shape[0])


def timm_names(state: dict, model: nn.Module) -> dict:
    """`state` in timm's parameter names for `model`: timm's own conversion of the architecture's original release
    where its module has one (ASL's TResNets: conv1.0 -> conv1.conv, InplaceABN's weights), else as it is."""
    convert = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    return convert(state, model) if convert is not None else state


def load_fitting(model: nn.Module, state: dict, path: Path, spec: Mapping) -> None:
    """`state` (in timm's names: `timm_state`) loaded into `model`, every parameter and shape matching, or a one-line
    error naming the file and the first misfit. On a model built on the meta device it only checks (assigned, no
    copy), as the pre-flight check does."""
    try:
        model.load_state_dict(state, assign=next(model.parameters()).is_meta)
    except RuntimeError as error:  # torch lists every mismatch; the first names the kind of misfit
        first = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise ValueError(f"{path} does not fit timm's {spec['name']} with kwargs {spec.get('kwargs') or {}}: "
                         f"{first[:300]}") from None


def check_hub_weights(name: str, timeout: float = 3.0) -> None:
    """Fails in seconds, naming the file to provide, where timm's pretrained weights of `name` are neither cached
    nor downloadable (instead of the Hub client's minute of retries)."""
    import socket

    from huggingface_hub import constants, try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise ValueError(f"timm has no pretrained weights for {name!r}")
    hub_id = cfg.hf_hub_id
    if hub_id and any(isinstance(try_to_load_from_cache(hub_id.split("@")[0], f), str)
                      for f in ("model.safetensors", "pytorch_model.bin")):
        return
    url_file = Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url or "none").name
    if cfg.url and url_file.exists():
        return
    try:
        if constants.HF_HUB_OFFLINE:
            raise OSError("HF_HUB_OFFLINE is set")
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
    except OSError:
        raise FileNotFoundError(
            f"timm's weights of {name} are not cached ({constants.HF_HUB_CACHE}) and the Hub cannot be reached: "
            f"run `python -c \"import timm; timm.create_model('{name}', pretrained=True)\"` where there is internet "
            f"and copy {constants.HF_HUB_CACHE}/models--{(hub_id or '').split('@')[0].replace('/', '--')} here (the "
            "only way for Figures 4 and 6, which name their annotators; for the annotator of the other tables, "
            "saving its state_dict to a file and setting annotator.checkpoint to it with annotator.pretrained "
            "false also works)") from None


def classes_of_head(class_map: str | os.PathLike) -> list[str]:
    """The wnids of a pretrained head's outputs, in order: "imagenet-1k" (every ImageNet head), or a file of one
    wnid per line."""
    from repro.data.labelsets import imagenet1k_wnids

    if str(class_map) == "imagenet-1k":
        return imagenet1k_wnids()
    path = Path(class_map)
    if not path.is_file():
        raise FileNotFoundError(f"class map {class_map} is neither 'imagenet-1k' nor a file of wnids")
    return path.read_text().split()


def head_rows(head_classes: int, wnids: Sequence[str], class_map: str | os.PathLike | None,
              name: str) -> list[int] | None:
    """The rows of a `head_classes`-output head that score the data's classes `wnids`, in their order: None where
    the head is kept as it is (as many outputs, no class map); else the rows of the class map's wnids."""
    if class_map is None:
        if head_classes != len(wnids):
            raise ValueError(f"{name} has a {head_classes}-class head but the data have {len(wnids)} classes: "
                             "set annotator.class_map to imagenet-1k (a head in ImageNet-1k order) or to a file "
                             "of the head's wnids, one per line")
        return None
    head_wnids = classes_of_head(class_map)
    if len(head_wnids) != head_classes:
        raise ValueError(f"class map {class_map} names {len(head_wnids)} classes for {name}'s "
                         f"{head_classes}-class head")
    position = {wnid: i for i, wnid in enumerate(head_wnids)}
    missing = [wnid for wnid in wnids if wnid not in position]
    if missing:
        raise ValueError(f"the data's class {missing[0]} is not in class map {class_map} ({len(missing)} missing)")
    return [position[wnid] for wnid in wnids]


def fit_head(model: nn.Module, wnids: Sequence[str], class_map: str | os.PathLike | None, name: str) -> nn.Module:
    """The classifier with a head over the data's classes `wnids` (`head_rows`)."""
    head = model.get_classifier()
    rows = head_rows(head.out_features, wnids, class_map, name)
    if rows is None:
        return model
    rows = torch.tensor(rows)
    weight, bias = head.weight.detach()[rows].clone(), head.bias.detach()[rows].clone()
    model.reset_classifier(len(wnids))
    new_head = model.get_classifier()
    with torch.no_grad():
        new_head.weight.copy_(weight)
        new_head.bias.copy_(bias)
    return model
