"""From a config to metrics: data -> annotator -> label maps -> student -> evaluation, each step a cached run.

Each step's run is keyed by the parts of the config it depends on, so students that differ only in their
supervision share one world, one annotator and one set of label maps, and a student's seed never retrains the
annotator. At paper scale the data are ImageNet folders and the annotator a pretrained timm model (or the
official label maps are given directly); the embedded scale builds the world and trains the annotator on its
extra pool. Both go through the same functions.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Mapping

import torch

from repro.runs import Run, cached_run

# Label maps are generated once with this many classes per cell; Table 6's smaller k and dtypes are derived.
BASE_TOPK = 10
# Sizes that do not change a run's result, left out of its key.
NOT_HASHED_TRAIN_KEYS = ("workers", "batch_size_eval")


def _hashed_train(train: Mapping) -> dict:
    return {k: v for k, v in train.items() if k not in NOT_HASHED_TRAIN_KEYS}


def data_key(cfg: Mapping) -> dict:
    return {"data": cfg["data"], "world": cfg["world"]}


def data_root(cfg: Mapping, runs_root: str | os.PathLike) -> Path:
    if cfg["data"]["source"] == "world":
        from repro.world import ensure_world

        return ensure_world(cfg["world"], runs_root)
    root = Path(cfg["data"]["root"])
    if not (root / "train").is_dir():
        raise FileNotFoundError(f"data.root {root} has no train/ folder (ImageNet layout expected)")
    return root


# --- the annotator ---------------------------------------------------------------------------------------------

def annotator_key(cfg: Mapping) -> dict:
    annotator = cfg["annotator"]
    if annotator["source"] != "train":
        return {"annotator": annotator}
    from repro.train.recipes import annotator_recipe

    recipe = annotator_recipe(_annotator_seeded(cfg))
    return {**data_key(cfg), "annotator": annotator, "recipe": {**recipe, "train": _hashed_train(recipe["train"])}}


def _annotator_seeded(cfg: Mapping) -> dict:
    """The config with the annotator's own seed: students of every seed share one annotator."""
    return {**cfg, "seed": cfg["annotator"]["seed"]}


def annotator_run(cfg: Mapping, runs_root: str | os.PathLike) -> Run:
    """The annotator trained by the suite on the extra pool and the training set, with single labels only."""
    from repro.data.imagenet import open_imagenet
    from repro.train.recipes import annotator_recipe
    from repro.train.trainer import train_classifier

    def compute(run: Run) -> dict:
        data = open_imagenet(data_root(cfg, runs_root), cfg["data"], train_splits=("extra", "train"))
        return train_classifier(run, annotator_recipe(_annotator_seeded(cfg)), data)

    return cached_run("annotator", annotator_key(cfg), runs_root, compute)


def annotator_source(cfg: Mapping, runs_root: str | os.PathLike) -> str:
    """What `build_annotator` loads: the trained checkpoint, or a timm name / checkpoint path from the config."""
    annotator = cfg["annotator"]
    if annotator["source"] == "train":
        from repro.train.trainer import MODEL_FILE

        return str(annotator_run(cfg, runs_root).dir / MODEL_FILE)
    return str(annotator.get("checkpoint") or annotator["model"]["name"])


def annotator_top1(cfg: Mapping, runs_root: str | os.PathLike) -> float:
    """The annotator's own val top-1 (Figure 4's x-axis): from its training run, or, for a pretrained annotator,
    from one evaluation at the resolution and crop its weights were made for."""
    if cfg["annotator"]["source"] == "train":
        return float(annotator_run(cfg, runs_root).metrics["imagenet_top1"])
    return float(_annotator_evaluation(cfg, runs_root).metrics["imagenet_top1"])


def _annotator_evaluation(cfg: Mapping, runs_root: str | os.PathLike) -> Run:
    from timm.data import resolve_model_data_config

    from repro.data.imagenet import open_imagenet
    from repro.evaluate.classification import evaluate_model
    from repro.train.supervision import build_teacher

    def compute(run: Run) -> dict:
        data = open_imagenet(data_root(cfg, runs_root), cfg["data"])
        model = build_teacher(teacher_spec(cfg, runs_root), data.num_classes)
        view = resolve_model_data_config(getattr(model, "model", model))  # the bare model under a re-normaliser
        device = "cuda" if torch.cuda.is_available() else "cpu"
        train = cfg["train"]
        return evaluate_model(model.to(device), [s for s in data.eval_sets if s.name == "imagenet"],
                              size=int(view["input_size"][-1]), crop_pct=float(view["crop_pct"]),
                              batch_size=int(train["batch_size_eval"]), workers=int(train["workers"]),
                              amp=bool(train["amp"]))

    return cached_run("annotator_eval", {**data_key(cfg), **annotator_key(cfg)}, runs_root, compute)


def teacher_spec(cfg: Mapping, runs_root: str | os.PathLike) -> dict:
    """The annotator of `cfg` as a KD teacher (supervision.kd_teacher): a trained annotator's checkpoint, named
    in the student's key by its run; or the pretrained timm model (or checkpoint) the config names."""
    annotator = cfg["annotator"]
    if annotator["source"] == "train":
        from repro.train.trainer import MODEL_FILE

        run = annotator_run(cfg, runs_root)
        return {**annotator["model"], "checkpoint": str(run.dir / MODEL_FILE), "annotator_run": run.hash}
    return {**annotator["model"], "checkpoint": annotator.get("checkpoint")}


def teacher_input_size(cfg: Mapping) -> int:
    """The resolution the annotator of `cfg` was trained at (its crops), or its pretrained weights' input size."""
    annotator = cfg["annotator"]
    if annotator["source"] == "train":
        from repro.train.recipes import annotator_recipe

        return int(annotator_recipe(_annotator_seeded(cfg))["train"]["crop_size"])
    import timm

    return int(timm.models.get_pretrained_cfg(annotator["model"]["name"]).input_size[-1])


def kd_changes(teacher_cfg: Mapping, runs_root: str | os.PathLike) -> dict:
    """Config changes that make a student learn by KD from the annotator of `teacher_cfg`, fed at its resolution."""
    return {"supervision.mode": "kd", "supervision.kd_teacher": teacher_spec(teacher_cfg, runs_root),
            "supervision.kd_input_size": teacher_input_size(teacher_cfg)}


# --- label maps ------------------------------------------------------------------------------------------------

def labelmaps_key(cfg: Mapping, topk: int, dtype: str, split: str = "train") -> dict:
    lm = cfg["labelmap"]
    key = {**annotator_key(cfg), "input_size": lm["input_size"], "output_stride": lm["output_stride"],
           "topk": topk, "dtype": dtype}
    if split != "train":  # the training maps keep the key (and the cached runs) they had before splits existed
        key["split"] = split
    return key


def labelmaps_dir(cfg: Mapping, runs_root: str | os.PathLike, split: str = "train") -> Path:
    """The label maps of the images of `split` (train; val for Figures 5 and A2) under the config's settings.

    The official maps when labelmap.official_dir is set (they cover train only); otherwise one annotator pass at
    BASE_TOPK fp32, and the configured top-k / dtype derived from it (Table 6's variants cost no second pass)."""
    lm = cfg["labelmap"]
    if lm.get("official_dir") and split == "train":
        return Path(lm["official_dir"])
    base = generated_labelmaps(cfg, runs_root, split)
    topk, dtype = int(lm["topk"]), lm["dtype"]
    if (topk, dtype) == (BASE_TOPK, "fp32"):
        return base.dir / "store"
    from repro.labelmaps.store import derive_store

    def derive(run: Run) -> dict:
        store = derive_store(base.dir / "store", run.dir / "store", topk=topk, dtype=dtype, overwrite=True)
        return _store_metrics(store)

    return cached_run("labelmaps", labelmaps_key(cfg, topk, dtype, split), runs_root, derive).dir / "store"


def _store_metrics(store: Path) -> dict:
    from repro.labelmaps.store import open_labelmaps

    maps = open_labelmaps(store)
    return {"labelmap_bytes_per_image": maps.bytes_per_image, **maps.describe()}


def generated_labelmaps(cfg: Mapping, runs_root: str | os.PathLike, split: str = "train") -> Run:
    """The annotator's pass over the images of `split` (BASE_TOPK, fp32); its metrics hold the pass's wall time
    (`generation_seconds`, Section 3.3's generation cost: the annotator's own training, done first when it is
    trained here, is not part of it) and the share of images whose whole-image map agrees with their label."""
    from repro.data.folders import image_folder, read_classes, unlabelled_folder
    from repro.labelmaps.annotator import build_annotator
    from repro.labelmaps.generate import generate_labelmaps
    from repro.train.supervision import agreeing_indices

    lm, annotator_cfg = cfg["labelmap"], cfg["annotator"]
    extra_pool = split == cfg["extra_data"]["split"]

    def compute(run: Run) -> dict:
        root = data_root(cfg, runs_root)
        wnids = read_classes(root)[0]
        num_classes = len(wnids)
        # the extra pool's own labels (if any) are not the suite's classes: its maps are all it is labelled with
        images = unlabelled_folder(root, split) if extra_pool else image_folder(root, split, wnids)
        source = annotator_source(cfg, runs_root)  # trains the annotator first where it is trained here
        started = time.time()
        annotator = build_annotator(source, pretrained=bool(annotator_cfg["pretrained"]),
                                    output_stride=lm["output_stride"], num_classes=num_classes)
        store = generate_labelmaps(annotator, list(images.relpaths), root, run.dir / "store",
                                   input_size=int(lm["input_size"]), topk=BASE_TOPK, dtype="fp32",
                                   batch_size=int(cfg["train"]["batch_size_eval"]),
                                   workers=int(cfg["train"]["workers"]), overwrite=True)
        metrics = {**_store_metrics(store), "generation_seconds": round(time.time() - started, 2)}
        if not extra_pool:
            agreeing = agreeing_indices(store, images, num_classes)
            # the share of the split's images whose whole-image map agrees with their label (the annotator's view)
            metrics[f"agreement_top1_{split}"] = 100.0 * len(agreeing) / len(images)
        return metrics

    return cached_run("labelmaps", labelmaps_key(cfg, BASE_TOPK, "fp32", split), runs_root, compute)


# --- the student -----------------------------------------------------------------------------------------------

SUPERVISION_KEYS = {
    "original": (),
    "label_smoothing": ("smoothing",),
    "label_cleaning": (),
    "relabel": ("variant", "mix_original"),
    "kd": ("kd_teacher", "kd_input_size"),
}
CUTMIX_KEYS = ("cutmix_beta", "cutmix_off_last_epochs")


def supervision_key(supervision: Mapping) -> dict:
    mode = supervision["mode"]
    if mode not in SUPERVISION_KEYS:
        raise ValueError(f"unknown supervision.mode {mode!r}: choose one of {', '.join(SUPERVISION_KEYS)}")
    keys = ("mode", "cutmix") + SUPERVISION_KEYS[mode] + (CUTMIX_KEYS if supervision["cutmix"] else ())
    key = {k: supervision[k] for k in keys}
    teacher = key.get("kd_teacher")
    if teacher and teacher.get("annotator_run"):
        # a teacher trained by the pipeline is named by its run, not by where this machine keeps its checkpoint
        key["kd_teacher"] = {k: v for k, v in teacher.items() if k != "checkpoint"}
    return key


def uses_labelmaps(cfg: Mapping) -> bool:
    return cfg["supervision"]["mode"] in ("relabel", "label_cleaning")


def student_key(cfg: Mapping) -> dict:
    key = {**data_key(cfg), "seed": cfg["seed"], "train": _hashed_train(cfg["train"]),
           "supervision": supervision_key(cfg["supervision"])}
    if uses_labelmaps(cfg):
        lm = cfg["labelmap"]
        key["labelmaps"] = ({"official_dir": lm["official_dir"]} if lm.get("official_dir")
                            else labelmaps_key(cfg, int(lm["topk"]), lm["dtype"]))
    if cfg["extra_data"]["enabled"]:  # absent otherwise: the keys of runs without extra data stay as they were
        extra = cfg["extra_data"]
        key["extra_data"] = {"split": extra["split"], "images": int(extra["images"]),
                             "labelmaps": labelmaps_key(cfg, int(cfg["labelmap"]["topk"]), cfg["labelmap"]["dtype"],
                                                        extra["split"])}
    return key


def student_run(cfg: Mapping, runs_root: str | os.PathLike) -> Run:
    from repro.data.imagenet import open_imagenet
    from repro.train.trainer import train_classifier

    def compute(run: Run) -> dict:
        root = data_root(cfg, runs_root)
        data = open_imagenet(root, cfg["data"])
        store = labelmaps_dir(cfg, runs_root) if uses_labelmaps(cfg) else None
        bytes_per_image = None if store is None else _store_metrics(store)["labelmap_bytes_per_image"]
        summary = {}
        if cfg["extra_data"]["enabled"]:
            data, store, summary = with_extra_data(cfg, runs_root, data, store)
        metrics = train_classifier(run, cfg, data, labelmaps=store)
        if bytes_per_image is not None:
            metrics["labelmap_bytes_per_image"] = bytes_per_image
        return {**metrics, **summary}

    return cached_run("train", student_key(cfg), runs_root, compute)


def with_extra_data(cfg: Mapping, runs_root: str | os.PathLike, data, store) -> tuple:
    """Table 5's extra data: the training set grown by images of the pool <data root>/<extra_data.split>, each
    kept image labelled by its ReLabel map only. The annotator labels the whole pool; `extra_data.images` of it
    are kept, balanced over the maps' top-1 classes. Returns (data, label maps of the grown set, summary)."""
    import dataclasses

    import numpy as np

    from repro.data.folders import ImageList
    from repro.labelmaps.analysis import balanced_top1_subsample
    from repro.labelmaps.store import ConcatLabelMaps, open_labelmaps

    extra = cfg["extra_data"]
    if cfg["supervision"]["mode"] != "relabel":
        raise ValueError(f"extra_data needs supervision.mode 'relabel', not {cfg['supervision']['mode']!r}: the "
                         "pool's images carry no labels of the suite's classes, only their label maps")
    pool = open_labelmaps(labelmaps_dir(cfg, runs_root, split=extra["split"]), data.num_classes)
    per_class = int(extra["images"]) // data.num_classes
    if per_class < 1:
        raise ValueError(f"extra_data.images = {extra['images']} is fewer than one image per class "
                         f"({data.num_classes} classes)")
    rows, top1 = balanced_top1_subsample(pool, per_class)
    kept = ImageList(data.root, tuple(pool.paths[row] for row in rows), top1)
    train = ImageList(data.root, data.train.relpaths + kept.relpaths, np.concatenate([data.train.labels, top1]))
    own = open_labelmaps(store, data.num_classes)
    maps = ConcatLabelMaps([(own, own.rows_for(data.train.relpaths)), (pool, rows)])
    per_class_counts = np.bincount(top1, minlength=data.num_classes)
    summary = {"extra_pool_images": pool.num_images, "extra_images": len(kept),
               "extra_images_per_class_min": int(per_class_counts.min()),
               "extra_images_per_class_max": int(per_class_counts.max())}
    return dataclasses.replace(data, train=train), maps, summary


def train_student(cfg: Mapping, runs_root: str | os.PathLike) -> dict:
    """The student's metrics (evaluation on every set the data have, plus training cost), trained once."""
    return student_run(cfg, runs_root).metrics


def annotator_report(cfg: Mapping, runs_root: str | os.PathLike, seed: int = 0) -> str:
    """The annotator's quality beside the original-label student of the same recipe, as printed by the ReLabel
    tables: ReLabel can only help when the annotator is clearly better than that student."""
    lines = []
    if cfg["annotator"]["source"] == "train":  # a pretrained annotator's top-1 would cost an evaluation here
        top1 = annotator_top1(cfg, runs_root)
        lines.append(f"annotator: val top-1 {top1:.2f}% ({cfg['annotator']['model']['name']}, "
                     f"{cfg['annotator']['train']['crop_size']} px crops, extra + train)")
        from repro.config import with_changes

        original = Run("train", student_key(with_changes(cfg, {"supervision.mode": "original", "seed": seed,
                                                                "supervision.cutmix": False})), runs_root)
        if original.done:
            margin = top1 - original.metrics["imagenet_top1"]
            lines.append(f"annotator margin over the original-label student (seed {seed}): {margin:+.2f} pp")
    if not cfg["labelmap"].get("official_dir"):
        agreement = generated_labelmaps(cfg, runs_root).metrics["agreement_top1_train"]
        lines.append(f"whole-image label map agrees with the training label on {agreement:.1f}% of training images")
    return "\n".join(lines)
