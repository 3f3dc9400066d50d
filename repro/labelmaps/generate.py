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
from repro.imagefiles import IMAGE_ERRORS, collate_readable, readable_batches
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
                     "list, and the pass would start again); or give such images blank maps and leave them out: "
                     "data.skip_unreadable=true (another run: the pass and its students start again; relabel "
                     "--skip-unreadable)")
PROGRESS_IMAGES, PROGRESS_SECONDS = 256, 30.0  # a kill loses at most about this much work
SKIPPED = "skipped.json"  # in a partial store under skip_unreadable: [row, message] of each image skipped so far


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
        except IMAGE_ERRORS as error:  # raised by `readable_batches` in the main process, as one line
            return f"cannot read image {path}: {error}", index


@torch.inference_mode()
def annotate_images(annotator: Annotator, images: Sequence[Image.Image | np.ndarray], input_size: int,
                    topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Label maps (values [N, k, H, W], ids [N, k, H, W]) of in-memory images."""
    device = annotator.mean.device
    batch = torch.stack([image_tensor(image, input_size) for image in images]).to(device)
    values, ids = annotator(batch, topk)
    return values.float().cpu(), ids.cpu()


def _settings(annotator: Annotator, relpaths: Sequence[str], input_size: int, topk: int, grid, dtype: str,
              skip_unreadable: bool = False) -> dict:
    digest = hashlib.sha256("\n".join(relpaths).encode()).hexdigest()
    return {"num_classes": annotator.num_classes, "annotator": annotator.description, "input_size": input_size,
            "topk": topk, "grid": list(grid), "dtype": dtype, "paths_sha256": digest,
            **({"skip_unreadable": True} if skip_unreadable else {})}


def _index_settings(settings: dict, seconds: float, skipped: list | None) -> dict:
    """What a pass's finished store records in its index beside the writer's own keys: its settings, its time over
    all its sessions, and under skip_unreadable its skipped rows ([row, message], in row order)."""
    return {**{key: value for key, value in settings.items() if key not in ("topk", "grid", "dtype")},
            "seconds": round(seconds, 2), **({"skipped": sorted(skipped)} if skipped is not None else {})}


def _same_pass(recorded: dict, settings: dict) -> bool:
    """Whether a store or an interrupted pass recorded `settings`. One of a skipping pass begun or finished before
    skipping existed lacks skip_unreadable: it stopped at its first unreadable image, so every row it holds was
    read, as a skipping pass would have."""
    return recorded == settings or (bool(settings.get("skip_unreadable")) and "skip_unreadable" not in recorded
                                    and {**recorded, "skip_unreadable": True} == settings)


def _finished_with(out_dir: Path, settings: dict) -> bool:
    """Whether out_dir holds a finished packed store written with `settings`."""
    try:
        recorded = json.loads((out_dir / INDEX).read_text())
    except FileNotFoundError:  # none, or a share rank 0 is removing after joining it
        return False
    # a store written before the pass's time was recorded in its index is made again, so that it is timed
    return "seconds" in recorded and _same_pass({key: recorded[key] for key in settings if key in recorded},
                                                json.loads(json.dumps(settings)))


def _resume_point(partial: Path, settings: dict) -> int | None:
    recorded = recorded_progress(partial)
    if recorded is None:
        return None
    if not _same_pass(recorded[0], settings):
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
                       keep_finished: bool = False, progress: bool = True, skip_unreadable: bool = False) -> Path:
    """Label maps of root/<relpath> for each relpath, written to out_dir (a packed store, or an official
    directory with fmt="official", fp32 only). Rerunning after an interruption resumes; with keep_finished, a
    packed store already finished at out_dir with the same settings is returned as it is (a job stopped after
    the pass but before its run was recorded), where overwrite alone would make it again. With skip_unreadable
    (packed only), an image that cannot be read gets a blank map and its row and message are listed in the
    index ("skipped"; `LabelMaps.skipped_rows`), where otherwise the pass stops naming it."""
    if fmt not in FORMATS:
        raise LabelMapError(f"unknown label-map format {fmt!r}: choose one of {', '.join(FORMATS)}")
    check_dtype(dtype)
    if fmt == "official" and dtype != "fp32":
        raise LabelMapError(f"the official format stores fp32 values, got dtype {dtype!r}")
    if fmt == "official" and skip_unreadable:
        raise LabelMapError("skipping unreadable images lists them in a packed store's index: use the packed format")
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
    settings = _settings(annotator, relpaths, input_size, topk, annotator.grid(input_size), dtype, skip_unreadable)
    with output_lock(out_dir):
        if keep_finished and fmt == "packed" and _finished_with(out_dir, settings):
            return out_dir
        if fmt == "official":
            return _generate_official(annotator, relpaths, root, out_dir, settings, batch_size, workers, device,
                                      overwrite, progress)
        return _generate_packed(annotator, relpaths, root, out_dir, settings, batch_size, workers, device,
                                overwrite, progress)


SHARE_WAIT_SECONDS = 5.0
SHARE_REPORT_SECONDS = 600.0  # rank 0 names the shares it still waits for this often
SHARE_STALL_SECONDS = 1800.0  # a share's progress is recorded every 30 s while its rank annotates


def generate_share(annotator: Annotator | nn.Module, relpaths: Sequence[str], root: str | os.PathLike,
                   out_dir: str | os.PathLike, rank: int, world_size: int, input_size: int, topk: int = 5,
                   dtype: str = "fp32", **options) -> Path | None:
    """One rank's share of a packed pass split over `world_size` ranks (torchrun): its contiguous slice of the
    images, a resumable store of its own in `<out>.shares-<world_size>/<rank>`. Rank 0 then waits for every share
    (by its files: one can take hours longer than another, so no collective) and joins them into `out_dir`, whose
    index holds the pass's own settings and its time summed over the shares (device-seconds). Returns out_dir on
    rank 0 and None on the others. `options` go to `generate_labelmaps`."""
    relpaths, out_dir = list(relpaths), Path(out_dir)
    if not relpaths:
        raise LabelMapError(f"no images to annotate under {root}")
    if not isinstance(annotator, Annotator):
        annotator = Annotator(annotator)
    device = torch.device(options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    annotator = annotator.to(device).eval()  # torchrun's rank has set its GPU as the current one
    check_dtype(dtype)
    if dtype == "compact":
        raise LabelMapError("a pass split over ranks joins fixed-width arrays: generate compact maps in one process, "
                            "or derive them from an fp32 store")
    skip_unreadable = bool(options.get("skip_unreadable"))
    settings = _settings(annotator, relpaths, input_size, topk, annotator.grid(input_size), dtype, skip_unreadable)
    shares_dir = out_dir.with_name(f"{out_dir.name}.shares-{world_size}")
    bounds = np.linspace(0, len(relpaths), world_size + 1).round().astype(int)
    slices = [relpaths[bounds[r]:bounds[r + 1]] for r in range(world_size)]
    shares = [shares_dir / str(r) for r in range(world_size) if slices[r]]
    # each share finished with its own slice's settings: not one left by an attempt over other images
    wanted = {share: _settings(annotator, slices[int(share.name)], input_size, topk, settings["grid"], dtype,
                               skip_unreadable) for share in shares}
    if rank == 0:
        remove_shares(out_dir, keep=shares_dir)  # an interrupted attempt's under another number of ranks
    mine = shares_dir / str(rank)
    # the share first: rank 0 removes the shares only after committing the store, so a share found missing here
    # is either not yet made or already joined, which the store then says
    if slices[rank] and not _finished_with(mine, wanted[mine]) and not _finished_with(out_dir, settings):
        generate_labelmaps(annotator, slices[rank], root, mine, input_size, topk, dtype, fmt="packed",
                           overwrite=True, keep_finished=True, **{"progress": rank == 0, **options})
    if rank != 0:
        return None
    with output_lock(out_dir):
        if not _finished_with(out_dir, settings):
            _wait_for_shares(wanted)
            indices = {share: json.loads((share / INDEX).read_text()) for share in shares}
            # each share's skipped rows, numbered in the whole pass
            skipped = [[int(bounds[int(share.name)]) + row, message] for share in shares
                       for row, message in indices[share].get("skipped", [])]
            seconds = sum(index["seconds"] for index in indices.values())
            concatenate_packed(shares, out_dir, {**_index_settings(settings, seconds, skipped if skip_unreadable
                                                                   else None), "shares": len(shares)})
    remove_shares(out_dir)
    return out_dir


def remove_shares(out_dir: Path, keep: Path | None = None) -> None:
    """The shares of split passes of out_dir (under any number of ranks), once joined or given up."""
    for shares_dir in Path(out_dir).parent.glob(f"{Path(out_dir).name}.shares-*"):
        if shares_dir != keep:
            shutil.rmtree(shares_dir, ignore_errors=True)


def _wait_for_shares(wanted: dict) -> None:
    """Until every share is finished with its settings: naming the unfinished ones now and then, and failing where
    none has recorded progress for SHARE_STALL_SECONDS (its rank stopped; a torchrun agent of another node can
    exit without stopping this one)."""
    started = last_report = last_change = time.monotonic()
    seen = None
    while True:
        waiting = [share for share, settings in wanted.items() if not _finished_with(share, settings)]
        if not waiting:
            return
        state = {share.name: _share_done(share) for share in waiting}
        now = time.monotonic()
        if state != seen:
            seen, last_change = state, now
        described = ", ".join(f"rank {name} ({done} of its images)" for name, done in state.items())
        if now - last_change > SHARE_STALL_SECONDS:
            raise LabelMapError(f"the label-map pass's shares of {described} have not moved in "
                                f"{SHARE_STALL_SECONDS / 60:.0f} min under {waiting[0].parent}: their ranks "
                                "stopped; rerun the job, which resumes every share")
        if now - last_report > SHARE_REPORT_SECONDS:
            print(f"rank 0 waits for the label-map shares of {described} ({(now - started) / 60:.0f} min so far)",
                  flush=True)
            last_report = now
        time.sleep(SHARE_WAIT_SECONDS)


def _share_done(share: Path) -> int:
    """Images a share's rank has recorded as annotated (0 before it has started)."""
    try:
        recorded = recorded_progress(partial_dir(share))
    except (OSError, ValueError):  # committed, or being replaced, as it was read
        return 0
    return 0 if recorded is None else recorded[1]


def _generate_packed(annotator: Annotator, relpaths: list[str], root, out_dir: Path, settings: dict,
                     batch_size: int, workers: int, device: torch.device, overwrite: bool, progress: bool) -> Path:
    topk, dtype, skip = settings["topk"], settings["dtype"], settings.get("skip_unreadable", False)
    partial = partial_dir(out_dir)
    done = _resume_point(partial, settings)
    session, earlier, skipped = time.monotonic(), 0.0, {}
    if done is None:
        shutil.rmtree(partial, ignore_errors=True)
        writer = PackedWriter(partial, len(relpaths), topk, settings["grid"], dtype)
        done = 0
        commit_progress(partial, settings, done, seconds=0.0)
    else:
        writer = PackedWriter(partial, len(relpaths), topk, settings["grid"], dtype, resume=True, done=done)
        earlier = recorded_seconds(partial)
        if skip and (partial / SKIPPED).exists():  # those before the resume point: the rest are read again
            skipped = {row: message for row, message in json.loads((partial / SKIPPED).read_text()) if row < done}
    # recorded after whole batches only, so that a resumed run sees the same batches as an uninterrupted one
    remaining = ImageFiles(root, relpaths[done:], settings["input_size"])
    recorded, recorded_at = done, time.monotonic()
    for start, values, ids, unreadable in _annotated_batches(annotator, remaining, (topk, *settings["grid"]),
                                                             batch_size, workers, device, done, len(relpaths),
                                                             progress, skip):
        writer.write(done + start, values, ids)
        for position, message in unreadable:
            skipped[done + start + position] = message
            tqdm.write(f"skipped (data.skip_unreadable): {message}")
        written = done + start + len(values)
        if written - recorded >= PROGRESS_IMAGES or time.monotonic() - recorded_at >= PROGRESS_SECONDS:
            writer.flush()
            if skip:  # before the resume point moves past them
                write_text_atomic(partial / SKIPPED, json.dumps(sorted(skipped.items())))
            commit_progress(partial, settings, written, seconds=earlier + time.monotonic() - session)
            recorded, recorded_at = written, time.monotonic()
    # the pass's time over all its sessions, which a store kept by a later call still holds
    writer.finish(relpaths, _index_settings(settings, earlier + time.monotonic() - session,
                                            [[row, message] for row, message in skipped.items()] if skip else None))
    (partial / PROGRESS).unlink()  # first: a resume point without its list of skipped rows would lose them
    (partial / SKIPPED).unlink(missing_ok=True)
    commit_dir(partial, out_dir, overwrite)
    return out_dir


def _skipping_collate(samples: list[tuple]) -> tuple:
    """(the readable images stacked, or None; every sample's index; (position, message) of each unreadable one)."""
    unreadable = [(position, image) for position, (image, _) in enumerate(samples) if isinstance(image, str)]
    readable = [image for image, _ in samples if not isinstance(image, str)]
    return (torch.stack(readable) if readable else None), torch.tensor([index for _, index in samples]), unreadable


def _annotated_batches(annotator: Annotator, dataset: ImageFiles, shape: tuple, batch_size: int, workers: int,
                       device: torch.device, done: int, total: int, progress: bool, skip_unreadable: bool = False):
    """(first index in dataset, values, ids, (position, message) of each unreadable image) per batch, maps of
    `shape` (k, H, W), with a progress bar counting images per second. An unreadable image stops the pass, or
    under skip_unreadable gets a blank map (values and ids 0)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda",
                        collate_fn=_skipping_collate if skip_unreadable else collate_readable)
    batches = loader if skip_unreadable else (
        (images, indices, []) for images, indices in readable_batches(loader, LabelMapError, UNREADABLE_ADVICE))
    bar = tqdm(total=total, initial=done, unit="img", desc="label maps", disable=not progress, dynamic_ncols=True)
    started, count = time.perf_counter(), 0
    try:
        for images, indices, unreadable in batches:
            values, ids = None, None
            if images is not None:
                with torch.inference_mode():
                    values, ids = annotator(images.to(device, non_blocking=True), shape[0])
                values, ids = values.float().cpu(), ids.cpu()
            if unreadable:
                skipped = {position for position, _ in unreadable}
                read = [p for p in range(len(indices)) if p not in skipped]
                blank_values, blank_ids = torch.zeros(len(indices), *shape), torch.zeros(len(indices), *shape,
                                                                                          dtype=torch.int64)
                if read:
                    blank_values[read], blank_ids[read] = values, ids
                values, ids = blank_values, blank_ids
            yield int(indices[0]), values, ids, unreadable
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
    for start, values, ids, _ in _annotated_batches(annotator, dataset, (settings["topk"], *settings["grid"]),
                                                    batch_size, workers, device, len(relpaths) - len(todo),
                                                    len(relpaths), progress):
        for offset, (v, i) in enumerate(zip(values, ids)):
            save_official(out_dir / f"{keys[todo[start + offset]]}.pt", v, i)
    return out_dir
