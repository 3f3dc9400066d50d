"""Training crops and evaluation views, built from torchvision.transforms.v2.functional.

Every random draw of a training crop (box, flip, colour jitter, lighting) comes from one numpy generator that the
dataset derives from (seed, epoch, image index), so a crop does not depend on worker order and repeats after a
resume. The crop box is sampled by `repro.crops.sample_rrc_boxes`, the sampler the world's statistics and figures
use.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision.transforms import InterpolationMode

from repro.crops import sample_rrc_boxes

INTERPOLATION = InterpolationMode.BILINEAR
JITTER_OPS = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
# ImageNet's RGB principal components (pixels in [0, 1]), the constants of fb.resnet.torch and the official code
IMAGENET_PCA_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
IMAGENET_PCA_EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009],
                                    [-0.5808, -0.0045, -0.8140],
                                    [-0.5836, -0.6948, 0.4203]])


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """uint8 [3, H, W] RGB; Pillow picks the format from the bytes (a few ImageNet ".JPEG" files are PNG or CMYK)."""
    with Image.open(path) as image:
        return F.pil_to_tensor(image.convert("RGB"))


def normalize(image: torch.Tensor, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD) -> torch.Tensor:
    return F.normalize(F.to_dtype(image, torch.float32, scale=True), mean=list(mean), std=list(std))


def pca_lighting(image: torch.Tensor, alpha: np.ndarray) -> torch.Tensor:
    """AlexNet's lighting noise on a float [3, H, W] image in [0, 1]: each pixel shifted by
    eigvec @ (alpha * eigval), unclipped, as the official code does. Written here: neither timm nor torchvision
    has it."""
    shift = IMAGENET_PCA_EIGVEC @ (torch.as_tensor(alpha, dtype=torch.float32) * IMAGENET_PCA_EIGVAL)
    return image + shift.view(3, 1, 1)


class TrainCrop:
    """RandomResizedCrop + horizontal flip + colour jitter + PCA lighting + normalisation, with the crop box as a
    label-map query.

    The flip comes after the crop, so the box (x1, y1, x2, y2), normalised by the image's width and height, is
    the region whose pooled label describes the crop whether or not it was flipped. `lighting` is the alphastd of
    the lighting noise (0: none, and no draw)."""

    def __init__(self, size: int, scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                 hflip: float = 0.5, color_jitter: float = 0.4, lighting: float = 0.0):
        self.size = int(size)
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.hflip = float(hflip)
        self.color_jitter = float(color_jitter)
        self.lighting = float(lighting)

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = image.shape[-2:]
        x1, y1, x2, y2 = sample_rrc_boxes(width, height, 1, rng, self.scale, self.ratio)[0]
        crop = F.resized_crop(image, top=int(y1), left=int(x1), height=int(y2 - y1), width=int(x2 - x1),
                              size=[self.size, self.size], interpolation=INTERPOLATION, antialias=True)
        if rng.random() < self.hflip:
            crop = F.horizontal_flip(crop)
        if self.color_jitter > 0:
            # torchvision's ColorJitter draws the order and the factors the same way, from torch's global RNG
            order = rng.permutation(len(JITTER_OPS))
            factors = rng.uniform(max(0.0, 1 - self.color_jitter), 1 + self.color_jitter, size=len(JITTER_OPS))
            for op in order:
                crop = JITTER_OPS[op](crop, float(factors[op]))
        crop = F.to_dtype(crop, torch.float32, scale=True)
        if self.lighting > 0:
            crop = pca_lighting(crop, rng.normal(0.0, self.lighting, size=3))
        box = torch.tensor([x1 / width, y1 / height, x2 / width, y2 / height], dtype=torch.float32)
        return normalize(crop), box


class EvalView:
    """timm's evaluation transform: resize the shorter side to floor(size / crop_pct), centre-crop size x size (or,
    `whole`, resize the whole image to size x size), by `interpolation` (bilinear, or the bicubic that pretrained
    weights such as EfficientNets' were evaluated with); normalised, or (normalized=False) as pixels in [0, 1] for an
    attack in pixel space (`mean_std` normalises)."""
    mean_std = (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)

    def __init__(self, size: int, crop_pct: float = 0.875, normalized: bool = True, whole: bool = False,
                 interpolation: str = INTERPOLATION.value):
        self.size = int(size)
        self.interpolation = InterpolationMode(interpolation)
        self.resize_to = int(math.floor(self.size / crop_pct))
        self.normalized = normalized
        self.whole = whole  # the whole image resized to size x size, aspect not kept (multi-label sets)

    def crop(self, image: torch.Tensor) -> torch.Tensor:
        """The view's pixels, uint8 [3, size, size], before any scaling to [0, 1]."""
        if self.whole:
            return F.resize(image, [self.size, self.size], interpolation=self.interpolation, antialias=True)
        return F.center_crop(F.resize(image, [self.resize_to], interpolation=self.interpolation, antialias=True),
                             [self.size, self.size])

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        image = self.crop(image)
        return normalize(image) if self.normalized else F.to_dtype(image, torch.float32, scale=True)
