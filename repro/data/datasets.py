"""Datasets over an ImageList: random training crops (with their boxes and sparse label maps) and evaluation views.

Training samples are keyed by (epoch, index), delivered by `EpochSampler`, so the crop of image i in epoch e is
the same whichever worker builds it, with persistent workers too, and after a resume.

An image or label map that cannot be read does not raise in a worker (where the message would come wrapped in
the worker's traceback): its sample says so, and the trainer stops naming the file (`batch_problems`), or skips an
unreadable image under `data.skip_unreadable`.
"""
from __future__ import annotations

import os
from typing import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, default_collate

from repro.crops import crop_rng
from repro.data.folders import ImageList
from repro.data.transforms import EvalView, TrainCrop, read_image
from repro.imagefiles import IMAGE_ERRORS, readable_batches
from repro.labelmaps.errors import LabelMapError
from repro.labelmaps.reader import open_labelmaps


class UnreadableImage(ValueError):
    """A training or evaluation image cannot be decoded; the message names the file."""

    @classmethod
    def training(cls, message: str, instead: str) -> "UnreadableImage":
        """The stop for an unreadable training image (`message` from `unreadable_training_image`), with what to do;
        `instead` says what data.skip_unreadable does in this context."""
        return cls(f"{message}: replace or delete the file, or set data.skip_unreadable=true to {instead}")


def unreadable_training_image(path, error) -> str:
    return f"cannot read training image {path}: {error}"


def sample_label(label) -> int | torch.Tensor:
    """A class index, or a multi-label image's multi-hot vector as float32 (its labels are rows of an [N, C] array)."""
    return int(label) if np.ndim(label) == 0 else torch.from_numpy(np.asarray(label, dtype=np.float32))


class TrainCrops(Dataset):
    """One random crop per (epoch, index) key. A sample is a dict:
    image float [3, s, s] (normalised), label (the original class, or a multi-hot vector), index (position in `images`),
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
        # rows the annotator's pass could not read (data.skip_unreadable): blank maps, never a target
        self.blank_rows = set() if labelmaps is None else set(self.labelmaps.skipped_rows.tolist())

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[dict]:
        """The samples of a batch (the DataLoader's call). The label maps of its images are read in one call:
        read image by image they cost the loader 10-13% of its throughput, read by batch nothing measurable
        (docs/benchmarks.md)."""
        samples = [self._crop(epoch, index) for epoch, index in keys]
        if self.labelmaps is not None:
            self._add_maps([sample for sample in samples if "image" in sample])
        return samples

    def _crop(self, epoch: int, index: int) -> dict:
        path = self.images.path(index)
        try:
            image, box = self.crop(read_image(path), crop_rng(self.seed, epoch, index))
        except IMAGE_ERRORS as error:
            return {"index": index, "unreadable": unreadable_training_image(path, error)}
        return {"image": image, "label": sample_label(self.images.labels[index]), "index": index, "box": box}

    def _add_maps(self, samples: list[dict]) -> None:
        """Each sample's label map, in place; a sample whose map cannot be read becomes a "bad_labelmap" one."""
        for sample in samples:
            if self.rows[sample["index"]] in self.blank_rows:  # the image reads now, but its map is blank
                index = sample["index"]
                sample.clear()
                sample.update({"index": index, "unreadable": f"training image {self.images.path(index)} has a "
                                                             "blank label map: the annotator's pass could not read it"})
        samples = [sample for sample in samples if "image" in sample]
        if not samples:
            return
        try:
            values, ids = self.labelmaps.read(self.rows[[sample["index"] for sample in samples]])
        except LabelMapError as error:
            if len(samples) > 1:  # which of them: each alone
                for sample in samples:
                    self._add_maps([sample])
                return
            index = samples[0]["index"]
            samples[0].clear()
            samples[0].update({"index": index, "bad_labelmap": str(error)})
            return
        for sample, sample_values, sample_ids in zip(samples, values, ids):
            sample["labelmap_values"], sample["labelmap_ids"] = sample_values, sample_ids


def collate_crops(samples: list[dict]) -> dict:
    """torch's collation of the samples that were read; those that were not are listed under "problems" as
    (kind, index, message), kind "unreadable" or "bad_labelmap"."""
    problems = [(kind, sample["index"], sample[kind]) for sample in samples for kind in ("unreadable", "bad_labelmap")
                if kind in sample]
    good = [sample for sample in samples if "image" in sample]
    batch = default_collate(good) if good else {}
    batch["problems"] = problems
    return batch


def batch_problems(batch: dict, skip_unreadable: bool) -> list[tuple[int, str]]:
    """(index, message) of the batch's unreadable images where they are skipped; raises for a damaged label map,
    for an unreadable image unless skip_unreadable, and for a batch of which nothing could be read."""
    problems = batch.pop("problems")
    for kind, _, message in problems:
        if kind == "bad_labelmap":
            raise LabelMapError(message)
        if not skip_unreadable:
            raise UnreadableImage.training(message, "train without it")
    if problems and "image" not in batch:
        raise UnreadableImage(f"no image of a batch can be read, the first: {problems[0][2]}")
    return [(index, message) for _, index, message in problems]


class EpochSampler(DistributedSampler):
    """torch's DistributedSampler (shuffled by seed + epoch, split across ranks) yielding (epoch, index) keys, from
    the `start`-th of this rank's samples on (a run resumed mid-epoch)."""
    start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        super().set_epoch(epoch)
        self.start = int(start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, index) for index in list(super().__iter__())[self.start:])


class EvalImages(Dataset):
    """The evaluation view of every image: (image, label, index)."""

    def __init__(self, images: ImageList, view: EvalView):
        self.images = images
        self.view = view

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | str, int | torch.Tensor | None, int]:
        path = self.images.path(index)
        try:
            image = read_image(path)
        except IMAGE_ERRORS as error:  # raised by `readable_batches` in the main process, as one line
            return f"cannot read evaluation image {path}: {error}", None, index
        return self.view(image), sample_label(self.images.labels[index]), index


def eval_batches(loader: Iterable) -> Iterator[tuple]:
    """The batches of a loader of `EvalImages` (collated by `collate_readable`); an image that cannot be read stops
    the evaluation with one line naming it."""
    return readable_batches(loader, UnreadableImage, "replace the file (an evaluation set is scored whole)")
