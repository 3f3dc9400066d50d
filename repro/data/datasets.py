"""Datasets over an ImageList: random training crops (with their boxes and sparse label maps) and evaluation views.

Training samples are keyed by (epoch, index), delivered by `EpochSampler`, so the crop of image i in epoch e is
the same whichever worker builds it, with persistent workers too, and after a resume.
"""
from __future__ import annotations

import os
from typing import Iterator

import torch
from torch.utils.data import Dataset, DistributedSampler

from repro.crops import crop_rng
from repro.data.folders import ImageList
from repro.data.transforms import EvalView, TrainCrop, read_image
from repro.labelmaps.reader import open_labelmaps


class TrainCrops(Dataset):
    """One random crop per (epoch, index) key. A sample is a dict:
    image float [3, s, s] (normalised), label (the original class), index (position in `images`),
    box float [4] (the crop's x1, y1, x2, y2 in [0, 1] of the original image) and, with label maps,
    labelmap_values float32 [k, H, W] and labelmap_ids int64 [k, H, W], read here (in the workers) and pooled by
    the trainer on the whole batch.
    """

    def __init__(self, images: ImageList, crop: TrainCrop, seed: int, labelmaps: str | os.PathLike | None = None):
        self.images = images
        self.crop = crop
        self.seed = int(seed)
        # the store pickles without its memory maps and reopens them once per worker process
        self.labelmaps = None if labelmaps is None else open_labelmaps(labelmaps)
        self.rows = None if labelmaps is None else self.labelmaps.rows_for(images.relpaths)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        image, box = self.crop(read_image(self.images.path(index)), crop_rng(self.seed, epoch, index))
        sample = {"image": image, "label": int(self.images.labels[index]), "index": index, "box": box}
        if self.labelmaps is not None:
            values, ids = self.labelmaps.read(self.rows[index:index + 1])
            sample["labelmap_values"], sample["labelmap_ids"] = values[0], ids[0]
        return sample


class EpochSampler(DistributedSampler):
    """torch's DistributedSampler (shuffled by seed + epoch, split across ranks) yielding (epoch, index) keys."""

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, index) for index in super().__iter__())


class EvalImages(Dataset):
    """The evaluation view of every image: (image, label, index)."""

    def __init__(self, images: ImageList, view: EvalView):
        self.images = images
        self.view = view

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.view(read_image(self.images.path(index))), int(self.images.labels[index]), index
