"""Label-map generation (Appendix B): every image resized whole to input_size x input_size (no crop), one batched
pass through the annotator, the top-k logits and class ids kept at every position.

Generation is resumable: the packed store is filled in place in `<out>.partial/`, and after the batch that makes
PROGRESS_IMAGES images or PROGRESS_SECONDS since the last record the arrays are flushed and `progress.json`
records how many images are done (and the settings, which a rerun must match). A rerun continues from there with
the same batches, so it writes what an uninterrupted run writes. The finished store is renamed to `<out>` in one
step. The official format (one file per image, written atomically) resumes by skipping the files that exist.
A lock on `<out>.lock` keeps a second process from writing the same output.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF
from tqdm import tqdm

from repro.atomic import write_text_atomic
from repro.imagefiles import collate_readable, readable_batches
from repro.labelmaps.annotator import Annotator
from repro.labelmaps.errors import LabelMapError
from repro.labelmaps.maps import official_key
from repro.labelmaps.official import OFFICIAL_SETTINGS, save_official
from repro.labelmaps.packed import INDEX, PackedWriter, commit_dir, concatenate_packed
from repro.labelmaps.progress import (PROGRESS, commit_progress, output_lock, partial_dir, recorded_progress,
                                      recorded_seconds)
from repro.labelmaps.quantize import check_dtype

FORMATS = ("packed", "official")
# the image list is part of the settings a resumed pass must match, so the file is replaced rather than removed
UNREADABLE_ADVICE = ("replace it with a readable copy and rerun, which resumes (removing it would change the image "
                     "list, and the pass would start again)")
PROGRESS_IMAGES, PROGRESS_SECONDS = 256, 30.0  # a kill loses at most about this much work


def image_tensor(image: Image.Image | np.ndarray, input_size: int) -> torch.Tensor:
    """The whole image resized (aspect not kept, as in the paper) to [3, input_size, input_size] in [0, 1]."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    tensor = TF.pil_to_tensor(image.convert("RGB"))
    tensor = TF.resize(tensor, [input_size, input_size], InterpolationMode.BICUBIC, antialias=True)
    return tensor.float().div_(255).clamp_(0, 1)


class ImageFiles(Dataset):
    def __init__(self, root: str | os.PathLike, relpaths: Sequence[str], input_size: int):
        self.root, self.relpaths, self.input_size = Path(root), list(relpaths), input_size

    def __len__(self) -> int:
        return len(self.relpaths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | str, int]:
        path = self.root / self.relpaths[index]
        try:
            with Image.open(path) as image:
                return image_tensor(image, self.input_size), index
        except (OSError, ValueError) as error:  # raised by `readable_batches` in the main process, as one line
            return f"cannot read image {path}: {error}", index


@torch.inference_mode()
def annotate_images(annotator: Annotator, images: Sequence[Image.Image | np.ndarray], input_size: int,
                    topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Label maps (values [N, k, H, W], ids [N, k, H, W]) of in-memory images."""
    device = annotator.mean.device
    batch = torch.stack([image_tensor(image, input_size) for image in images]).to(device)
    values, ids = annotator(batch, topk)
    return values.float().cpu(), ids.cpu()


def _settings(annotator: Annotator, relpaths: Sequence[str], input_size: int, topk: int, grid, dtype: str) -> dict:
    digest = hashlib.sha256("\n".join(relpaths).encode()).hexdigest()
    return {"num_classes": annotator.num_classes, "annotator": annotator.description, "input_size": input_size,
            "topk": topk, "grid": list(grid), "dtype": dtype, "paths_sha256": digest}


def _finished_with(out_dir: Path, settings: dict) -> bool:
    """Whether out_dir holds a finished packed store written with `settings`."""
    index = out_dir / INDEX
    if not index.is_file():
        return False
    recorded = json.loads(index.read_text())
    # a store written before the pass's time was recorded in its index is made again, so that it is timed
    return "seconds" in recorded and all(recorded.get(key) == json.loads(json.dumps(value))
                                         for key, value in settings.items())


def _resume_point(partial: Path, settings: dict) -> int | None:
    recorded = recorded_progress(partial)
    if recorded is None:
        return None
    if recorded[0] != settings:
        changed = sorted(key for key in set(settings) | set(recorded[0]) if recorded[0].get(key) != settings.get(key))
        if changed == ["paths_sha256"]:
            raise LabelMapError(f"{partial} holds an interrupted generation of another image list (an image was "
                                "added, removed or renamed since it started): restore the images to resume it, or "
                                "delete it to start again")
        raise LabelMapError(f"{partial} holds an interrupted generation with other settings ({', '.join(changed)}); "
                            f"delete it or rerun with the same annotator, images and options")
    return recorded[1]


def generate_labelmaps(annotator: Annotator | nn.Module, relpaths: Sequence[str], root: str | os.PathLike,
                       out_dir: str | os.PathLike, input_size: int, topk: int = 5, dtype: str = "fp32",
                       batch_size: int = 64, workers: int = 0, fmt: str = "packed",
                       device: str | torch.device | None = None, overwrite: bool = False,
                       keep_finished: bool = False, progress: bool = True) -> Path:
    """Label maps of root/<relpath> for each relpath, written to out_dir (a packed store, or an official
    directory with fmt="official", fp32 only). Rerunning after an interruption resumes; with keep_finished, a
    packed store already finished at out_dir with the same settings is returned as it is (a job stopped after
    the pass but before its run was recorded), where overwrite alone would make it again."""
    if fmt not in FORMATS:
        raise LabelMapError(f"unknown label-map format {fmt!r}: choose one of {', '.join(FORMATS)}")
    check_dtype(dtype)
    if fmt == "official" and dtype != "fp32":
        raise LabelMapError(f"the official format stores fp32 values, got dtype {dtype!r}")
    relpaths = list(relpaths)
    if not relpaths:
        raise LabelMapError(f"no images to annotate under {root}")
    if not isinstance(annotator, Annotator):
        annotator = Annotator(annotator)
    if not 1 <= topk <= annotator.num_classes:
        raise LabelMapError(f"topk must be in 1..{annotator.num_classes}, got {topk}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    annotator = annotator.to(device).eval()
    out_dir = Path(out_dir)
    if fmt == "packed" and out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; overwrite (--overwrite) replaces it")
    settings = _settings(annotator, relpaths, input_size, topk, annotator.grid(input_size), dtype)
    with output_lock(out_dir):
        if keep_finished and fmt == "packed" and _finished_with(out_dir, settings):
            return out_dir
        if fmt == "official":
            return _generate_official(annotator, relpaths, root, out_dir, settings, batch_size, workers, device,
                                      overwrite, progress)
        return _generate_packed(annotator, relpaths, root, out_dir, settings, batch_size, workers, device,
                                overwrite, progress)


SHARE_WAIT_SECONDS = 5.0


def generate_share(annotator: Annotator | nn.Module, relpaths: Sequence[str], root: str | os.PathLike,
                   out_dir: str | os.PathLike, rank: int, world_size: int, input_size: int, topk: int = 5,
                   dtype: str = "fp32", **options) -> Path | None:
    """One rank's share of a packed pass split over `world_size` ranks (torchrun): its contiguous slice of the
    images, a resumable store of its own in `<out>.shares-<world_size>/<rank>`. Rank 0 then waits for every share
    (by its files: one can take hours longer than another, so no collective) and joins them into `out_dir`, whose
    index holds the pass's own settings and its time summed over the shares (device-seconds). Returns out_dir on
    rank 0 and None on the others. `options` go to `generate_labelmaps`."""
    relpaths, out_dir = list(relpaths), Path(out_dir)
    if not isinstance(annotator, Annotator):
        annotator = Annotator(annotator)
    device = torch.device(options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    annotator = annotator.to(device).eval()  # torchrun's rank has set its GPU as the current one
    check_dtype(dtype)
    if dtype == "compact":
        raise LabelMapError("a pass split over ranks joins fixed-width arrays: generate compact maps in one process, "
                            "or derive them from an fp32 store")
    settings = _settings(annotator, relpaths, input_size, topk, annotator.grid(input_size), dtype)
    shares_dir = out_dir.with_name(f"{out_dir.name}.shares-{world_size}")
    bounds = np.linspace(0, len(relpaths), world_size + 1).round().astype(int)
    slices = [relpaths[bounds[r]:bounds[r + 1]] for r in range(world_size)]
    shares = [shares_dir / str(r) for r in range(world_size) if slices[r]]
    if not _finished_with(out_dir, settings) and slices[rank]:
        generate_labelmaps(annotator, slices[rank], root, shares_dir / str(rank), input_size, topk, dtype,
                           fmt="packed", overwrite=True, keep_finished=True,
                           **{"progress": rank == 0, **options})
    if rank != 0:
        return None
    with output_lock(out_dir):
        if not _finished_with(out_dir, settings):
            # each share finished with its own slice's settings: not one left by an attempt over other images
            wanted = {share: _settings(annotator, slices[int(share.name)], input_size, topk,
                                       settings["grid"], dtype) for share in shares}
            while not all(_finished_with(share, wanted[share]) for share in shares):
                time.sleep(SHARE_WAIT_SECONDS)
            seconds = sum(json.loads((share / INDEX).read_text())["seconds"] for share in shares)
            concatenate_packed(shares, out_dir, {**{k: v for k, v in settings.items()
                                                    if k not in ("topk", "grid", "dtype")},
                                                 "seconds": round(seconds, 2), "shares": len(shares)})
    for shares_of_any_size in out_dir.parent.glob(f"{out_dir.name}.shares-*"):  # an attempt under other ranks' too
        shutil.rmtree(shares_of_any_size, ignore_errors=True)
    return out_dir


def _generate_packed(annotator: Annotator, relpaths: list[str], root, out_dir: Path, settings: dict,
                     batch_size: int, workers: int, device: torch.device, overwrite: bool, progress: bool) -> Path:
    topk, dtype = settings["topk"], settings["dtype"]
    partial = partial_dir(out_dir)
    done = _resume_point(partial, settings)
    session, earlier = time.monotonic(), 0.0
    if done is None:
        shutil.rmtree(partial, ignore_errors=True)
        writer = PackedWriter(partial, len(relpaths), topk, settings["grid"], dtype)
        done = 0
        commit_progress(partial, settings, done, seconds=0.0)
    else:
        writer = PackedWriter(partial, len(relpaths), topk, settings["grid"], dtype, resume=True, done=done)
        earlier = recorded_seconds(partial)
    # recorded after whole batches only, so that a resumed run sees the same batches as an uninterrupted one
    remaining = ImageFiles(root, relpaths[done:], settings["input_size"])
    recorded, recorded_at = done, time.monotonic()
    for start, values, ids in _annotated_batches(annotator, remaining, topk, batch_size, workers, device, done,
                                                 len(relpaths), progress):
        writer.write(done + start, values, ids)
        written = done + start + len(values)
        if written - recorded >= PROGRESS_IMAGES or time.monotonic() - recorded_at >= PROGRESS_SECONDS:
            writer.flush()
            commit_progress(partial, settings, written, seconds=earlier + time.monotonic() - session)
            recorded, recorded_at = written, time.monotonic()
    # the pass's time over all its sessions, which a store kept by a later call still holds
    writer.finish(relpaths, {**{k: v for k, v in settings.items() if k not in ("topk", "grid", "dtype")},
                             "seconds": round(earlier + time.monotonic() - session, 2)})
    (partial / PROGRESS).unlink()
    commit_dir(partial, out_dir, overwrite)
    return out_dir


def _annotated_batches(annotator: Annotator, dataset: ImageFiles, topk: int, batch_size: int, workers: int,
                       device: torch.device, done: int, total: int, progress: bool):
    """(first index in dataset, values, ids) per batch, with a progress bar counting images per second."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", collate_fn=collate_readable)
    bar = tqdm(total=total, initial=done, unit="img", desc="label maps", disable=not progress, dynamic_ncols=True)
    started, count = time.perf_counter(), 0
    try:
        for images, indices in readable_batches(loader, LabelMapError, UNREADABLE_ADVICE):
            with torch.inference_mode():
                values, ids = annotator(images.to(device, non_blocking=True), topk)
            yield int(indices[0]), values.float().cpu(), ids.cpu()
            count += len(indices)
            bar.update(len(indices))
    finally:
        bar.close()
    if progress and count:
        elapsed = time.perf_counter() - started
        print(f"annotated {count} images in {elapsed:.1f} s ({count / elapsed:.1f} img/s)")


def _generate_official(annotator: Annotator, relpaths: list[str], root, out_dir: Path, settings: dict,
                       batch_size: int, workers: int, device: torch.device, overwrite: bool,
                       progress: bool) -> Path:
    keys = [official_key(p) for p in relpaths]
    if len(set(keys)) != len(keys):
        raise LabelMapError("two images share a <wnid>/<stem> key; the official layout cannot hold both")
    marker = out_dir / OFFICIAL_SETTINGS
    if overwrite:
        shutil.rmtree(out_dir, ignore_errors=True)
    elif marker.exists() and json.loads(marker.read_text()) != settings:
        raise LabelMapError(f"{out_dir} holds label maps made with other settings; overwrite (--overwrite) replaces them")
    elif out_dir.exists() and not marker.exists():
        raise FileExistsError(f"{out_dir} exists and is not a label-map directory made here")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(marker, json.dumps(settings))
    todo = [i for i, key in enumerate(keys) if not (out_dir / f"{key}.pt").exists()]
    dataset = ImageFiles(root, [relpaths[i] for i in todo], settings["input_size"])
    for start, values, ids in _annotated_batches(annotator, dataset, settings["topk"], batch_size, workers,
                                                 device, len(relpaths) - len(todo), len(relpaths), progress):
        for offset, (v, i) in enumerate(zip(values, ids)):
            save_official(out_dir / f"{keys[todo[start + offset]]}.pt", v, i)
    return out_dir
