"""Stores made from other stores: official <-> packed, and packed stores with fewer classes per position or
another dtype (Table 6's variants). Each is written to `<out>.partial/` and renamed into place when complete.

A packed store is written chunk by chunk; after each chunk the partial store is flushed and `progress.json`
records the rows done and what they were made from (the source's path, format, size, image paths and the
output's settings). A rerun of the same conversion resumes there and writes what an uninterrupted one writes; a
rerun with anything else refuses, naming what differs, unless overwrite (which starts over).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from repro.atomic import write_text_atomic
from repro.labelmaps.errors import LabelMapError
from repro.labelmaps.maps import CHUNK, LabelMaps, official_key
from repro.labelmaps.official import OFFICIAL_SETTINGS, save_official
from repro.labelmaps.packed import MAX_CLASSES, PackedWriter, check_classes, commit_dir
from repro.labelmaps.progress import (PROGRESS, commit_progress, differences, output_lock, partial_dir,
                                      recorded_progress)
from repro.labelmaps.quantize import check_dtype
from repro.labelmaps.reader import open_labelmaps


def _sorted_topk(values: torch.Tensor, ids: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    values, order = values.sort(dim=1, descending=True, stable=True)
    return values[:, :topk], ids.gather(1, order)[:, :topk]


def write_store(source: LabelMaps, out_dir: str | os.PathLike, topk: int | None = None, dtype: str | None = None,
                paths: Sequence[str] | None = None, transpose: bool = False, class_map: np.ndarray | None = None,
                overwrite: bool = False, chunk: int = CHUNK) -> Path:
    """A packed store from any label maps, optionally keeping fewer classes per position (topk) or another
    dtype, under other image paths, with each map's H and W swapped (transpose), or with its class ids renumbered
    (class_map: source id -> new id, -1 for a class the new numbering lacks; such an entry keeps value 0, which is
    what pooling gives a class outside a position's top-k, so it adds nothing). Resumes an interrupted conversion
    of the same source and settings (`chunk` rows per progress record)."""
    topk = source.topk if topk is None else int(topk)
    dtype = check_dtype(dtype or source.dtype)
    if not 1 <= topk <= source.topk:
        raise LabelMapError(f"topk must be in 1..{source.topk} (the source's), got {topk}")
    paths = list(source.paths if paths is None else paths)
    if len(paths) != source.num_images:
        raise LabelMapError(f"{len(paths)} paths for {source.num_images} label maps")
    if source.num_classes > MAX_CLASSES:
        raise LabelMapError(f"{source.num_classes} classes do not fit the uint16 ids of a packed store")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; overwrite (--overwrite) replaces it")
    grid = source.grid[::-1] if transpose else source.grid
    num_classes = source.num_classes
    if class_map is not None:
        class_map = torch.as_tensor(class_map, dtype=torch.int64)
        num_classes = int(class_map.max()) + 1
    made_from = {"source": {"path": str(source.path), "format": source.format, "num_images": source.num_images,
                            "topk": source.topk, "grid": list(source.grid), "dtype": source.dtype,
                            "num_classes": source.num_classes, "paths_sha256": _digest(source.paths)},
                 "paths_sha256": _digest(paths), "topk": topk, "dtype": dtype, "transpose": transpose,
                 "class_map_sha256": None if class_map is None else _digest(class_map.tolist())}
    partial = partial_dir(out_dir)
    with output_lock(out_dir):
        done = _resume_point(partial, made_from, overwrite)
        if done is None:
            shutil.rmtree(partial, ignore_errors=True)
            writer = PackedWriter(partial, source.num_images, topk, grid, dtype)
            done = 0
            commit_progress(partial, made_from, done)
        else:
            writer = PackedWriter(partial, source.num_images, topk, grid, dtype, resume=True, done=done)
        for start in range(done, source.num_images, chunk):
            rows = np.arange(start, min(start + chunk, source.num_images))
            values, ids = source.read(rows)
            check_classes(ids, source.num_classes, source.path)
            values, ids = _sorted_topk(values, ids, topk)
            if class_map is not None:
                ids = class_map[ids]
                values = values.masked_fill(ids < 0, 0.0)
                ids = ids.clamp(min=0)
            if transpose:
                values, ids = values.transpose(2, 3), ids.transpose(2, 3)
            writer.write(start, values, ids)
            writer.flush()
            commit_progress(partial, made_from, int(rows[-1]) + 1)
        settings = {"num_classes": num_classes, "annotator": source.settings.get("annotator"),
                    "input_size": source.settings.get("input_size"),
                    "derived_from": {"path": str(source.path), "format": source.format, "topk": source.topk,
                                     "dtype": source.dtype},
                    # rows keep their order, so the source's unreadable images are the same rows here
                    **_skipped_of(source)}
        writer.finish(paths, settings)
        (partial / PROGRESS).unlink()
        commit_dir(partial, out_dir, overwrite)
    return out_dir


def _skipped_of(source: LabelMaps) -> dict:
    """The index entry listing the source's rows whose images its pass could not read (none: no entry)."""
    messages = {int(row): message for row, message in source.settings.get("skipped", [])}
    rows = source.skipped_rows.tolist()
    return {"skipped": [[row, messages.get(row, "skipped by the pass")] for row in rows]} if rows else {}


def _digest(items) -> str:
    return hashlib.sha256(json.dumps(list(items)).encode()).hexdigest()


def _resume_point(partial: Path, made_from: dict, overwrite: bool) -> int | None:
    """Rows done by an interrupted conversion of the same source with the same settings, or None to start over
    (no partial store, or overwrite and a partial store of something else)."""
    recorded = recorded_progress(partial)
    if recorded is None:
        return None
    settings, done = recorded
    if settings == made_from:
        return done
    if overwrite:
        return None
    differ = "; ".join(differences(settings, made_from))
    raise LabelMapError(f"{partial} holds an interrupted conversion with other settings ({differ}): rerun the "
                        f"same conversion to resume it, or pass --overwrite to start over")


def derive_store(source: str | os.PathLike, out_dir: str | os.PathLike, topk: int | None = None,
                 dtype: str | None = None, classes: Sequence[str] | None = None, overwrite: bool = False) -> Path:
    """Table 6's variants: a store keeping the top-k' <= k classes per position and/or another dtype. With
    `classes` (wnids, a subset of ImageNet-1k's), the source's ImageNet-1k class ids (the released maps') are
    renumbered to positions in `classes`, entries of the other classes dropped."""
    maps = open_labelmaps(source)
    class_map = None if classes is None else imagenet1k_class_map(classes, maps.num_classes, maps.path)
    return write_store(maps, out_dir, topk=topk, dtype=dtype, class_map=class_map, overwrite=overwrite)


def imagenet1k_class_map(classes: Sequence[str], num_classes: int, where) -> np.ndarray:
    """ImageNet-1k class id -> position in `classes` (-1 for the classes it lacks)."""
    from repro.data.labelsets import imagenet1k_wnids

    imagenet = imagenet1k_wnids()
    if num_classes != len(imagenet):
        raise LabelMapError(f"{where} holds {num_classes}-class ids, not ImageNet-1k's {len(imagenet)}: only "
                            "ImageNet-1k maps can be renumbered to a subset of its classes")
    position = {wnid: i for i, wnid in enumerate(imagenet)}
    unknown = [wnid for wnid in classes if wnid not in position]
    if unknown:
        raise LabelMapError(f"class {unknown[0]} is not an ImageNet-1k wnid, so {where} has no ids for it")
    class_map = np.full(len(imagenet), -1, dtype=np.int64)
    class_map[[position[wnid] for wnid in classes]] = np.arange(len(classes))
    return class_map


def official_to_packed(source: str | os.PathLike, out_dir: str | os.PathLike, dtype: str = "fp32",
                       topk: int | None = None, prefix: str = "train/", ext: str = ".JPEG", transpose: bool = False,
                       num_classes: int | None = None, overwrite: bool = False) -> Path:
    """Pack an official directory; image paths become prefix + <wnid>/<stem> + ext."""
    maps = open_labelmaps(source, num_classes)
    if maps.format != "official":
        raise LabelMapError(f"{source} is a packed store, not an official directory")
    paths = [f"{prefix}{key}{ext}" for key in maps.paths]
    return write_store(maps, out_dir, topk=topk, dtype=dtype, paths=paths, transpose=transpose,
                       overwrite=overwrite)


def packed_to_official(source: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write one <wnid>/<stem>.pt per image (fp32, as released) from a packed store; none for an image its pass
    could not read (a blank map, which the official layout cannot mark: the image has no map, as checks report)."""
    maps = open_labelmaps(source)
    if maps.format != "packed":
        raise LabelMapError(f"{source} is an official directory, not a packed store")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; overwrite (--overwrite) replaces it")
    keys = [official_key(p) for p in maps.paths]
    if len(set(keys)) != len(keys):
        raise LabelMapError(f"{source}: two images share a <wnid>/<stem> key, the official layout cannot hold both")
    partial = partial_dir(out_dir)
    shutil.rmtree(partial, ignore_errors=True)
    blank = set(maps.skipped_rows.tolist())
    for start in range(0, maps.num_images, CHUNK):
        rows = np.arange(start, min(start + CHUNK, maps.num_images))
        values, ids = maps.read(rows)
        for row, v, i in zip(rows, values, ids):
            if row not in blank:
                save_official(partial / f"{keys[row]}.pt", v, i)
    settings = {**{k: maps.settings.get(k) for k in ("num_classes", "annotator", "input_size")},
                "topk": maps.topk, "grid": list(maps.grid)}
    write_text_atomic(partial / OFFICIAL_SETTINGS, json.dumps(settings))
    commit_dir(partial, out_dir, overwrite)
    return out_dir
