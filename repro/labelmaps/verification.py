"""Checking a store of either format, and that it covers the images of a folder (`labelmaps verify`)."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from repro.imagefiles import list_images
from repro.labelmaps.errors import LabelMapError
from repro.labelmaps.maps import CHUNK
from repro.labelmaps.official import OfficialLabelMaps, load_official_tensor
from repro.labelmaps.packed import INDEX, PackedLabelMaps
from repro.labelmaps.reader import open_labelmaps


def _check_rows(values: np.ndarray, ids: np.ndarray, scales: np.ndarray | None,
                num_classes: int) -> list[tuple[int, str]]:
    """Problems of one chunk of rows, as (row offset, message) pairs."""
    problems = []
    if scales is not None:
        bad = ~(np.isfinite(scales).all(axis=1) & (scales[:, 0] > 0))
        problems += [(int(r), "bad quantisation scale") for r in np.flatnonzero(bad)]
    else:
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        problems += [(int(r), "non-finite values") for r in np.flatnonzero(bad)]
    flat_ids = ids.reshape(len(ids), ids.shape[1], -1)
    bad = (flat_ids.max(axis=(1, 2)) >= num_classes) | (flat_ids.min(axis=(1, 2)) < 0)
    problems += [(int(r), f"class id >= {num_classes} or < 0") for r in np.flatnonzero(bad)]
    ordered = np.sort(flat_ids, axis=1)
    bad = (ordered[:, 1:] == ordered[:, :-1]).any(axis=(1, 2))
    problems += [(int(r), "a class repeated at one position") for r in np.flatnonzero(bad)]
    return problems


def _verify_packed(maps: PackedLabelMaps, problems: list[str]) -> None:
    if len(maps.paths) != maps.num_images:
        problems.append(f"{maps.path / INDEX}: {len(maps.paths)} paths for {maps.num_images} images")
    if len(set(maps.paths)) != len(maps.paths):
        problems.append(f"{maps.path / INDEX}: repeated image paths")
    if maps.dtype == "compact":
        _verify_compact(maps, problems)
        return
    try:
        values, ids, scales = maps.arrays()  # checks the arrays' shapes and dtypes against the index
    except LabelMapError as error:
        problems.append(str(error))
        return
    blank = set(maps.skipped_rows.tolist())  # listed as skipped by the pass: blank by design
    for start in range(0, maps.num_images, CHUNK):
        stop = min(start + CHUNK, maps.num_images)
        chunk_scales = None if scales is None else np.asarray(scales[start:stop])
        for offset, message in _check_rows(np.asarray(values[start:stop]), np.asarray(ids[start:stop]),
                                           chunk_scales, maps.num_classes):
            if start + offset not in blank:
                problems.append(f"{maps.paths[start + offset]} (row {start + offset}): {message}")


def _verify_compact(maps: PackedLabelMaps, problems: list[str]) -> None:
    """Every record decoded and checked; a damaged record is reported by its row, and the rest still checked."""
    blank = set(maps.skipped_rows.tolist())  # listed as skipped by the pass: blank by design
    try:
        scales = maps.records().scales  # checks the row table's and scales' shapes against the index
    except LabelMapError as error:
        problems.append(str(error))
        return
    for start in range(0, maps.num_images, CHUNK):
        rows = np.arange(start, min(start + CHUNK, maps.num_images))
        try:
            decoded = [(rows, *maps.decode(rows))]
        except LabelMapError:  # read the chunk row by row to name every damaged record
            decoded = []
            for row in rows:
                try:
                    decoded.append((rows[row - start:row - start + 1], *maps.decode([row])))
                except LabelMapError as error:
                    problems.append(str(error))
        for chunk_rows, values, ids in decoded:
            for offset, message in _check_rows(values, ids, np.asarray(scales[chunk_rows]), maps.num_classes):
                row = int(chunk_rows[offset])
                if row not in blank:
                    problems.append(f"{maps.paths[row]} (row {row}): {message}")


def _verify_official(maps: OfficialLabelMaps, problems: list[str]) -> None:
    shape = (2, maps.topk, *maps.grid)
    for row in range(maps.num_images):
        file = maps.file(row)
        try:
            tensor = load_official_tensor(file)
        except LabelMapError as error:
            problems.append(str(error))
            continue
        if tuple(tensor.shape) != shape:
            problems.append(f"{file}: {tuple(tensor.shape)}, expected {shape} ({maps.shape_source})")
            continue
        if not torch.equal(tensor[1], tensor[1].round()):
            problems.append(f"{file}: class ids are not whole numbers")
        problems += [f"{file}: {message}" for _, message in
                     _check_rows(tensor[None, 0].numpy(), tensor[None, 1].round().long().numpy(), None,
                                 maps.num_classes)]


def verify(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
           splits: Sequence[str] = ("train",), num_classes: int | None = None,
           raise_on_failure: bool = True) -> dict:
    """Check a store: array shapes and dtypes, class ids < num_classes, finite values, no class repeated at a
    position, and (with image_root) a map for every image under image_root/<split>. Returns a report
    (`ok`, `problems`, sizes); raises LabelMapError listing the first problems unless raise_on_failure is False."""
    maps = open_labelmaps(path, num_classes)
    problems: list[str] = []
    if isinstance(maps, PackedLabelMaps):
        _verify_packed(maps, problems)
    else:
        _verify_official(maps, problems)
    report = maps.describe()
    if image_root is not None:
        images = [p for split in splits for p in list_images(image_root, split)]
        rows = [maps.find(p) for p in images]
        missing = [p for p, row in zip(images, rows) if row < 0]
        problems += [f"no label map for image {p}" for p in missing]
        report.update(images=len(images), missing=len(missing), extra=maps.num_images - len(set(rows) - {-1}))
    report.update(ok=not problems, problems=problems)
    if problems and raise_on_failure:
        shown = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise LabelMapError(f"{path}: {len(problems)} problem(s): {shown}{more}")
    return report
