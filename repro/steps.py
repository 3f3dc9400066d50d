"""What each kind of run computes, from its spec alone (`repro.runs.cached` calls these).

world      the generated world's folder
annotator  the suite's annotator, trained on the extra pool and the training set
labelmaps  the annotator's pass over a split (BASE_TOPK, fp32), or a variant derived from stored maps
train      a student, or a fine-tune from another run (`train.init`)
eval       one evaluator applied to a trained (or pretrained) model
evalset    a robustness set built from the world (Table 7: ImageNet-C, backgrounds, ImageNet-A analogues)
detector   a Faster or Mask R-CNN trained and scored in MMDetection from a student's backbone (Table 9)
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from repro.contention import GENERATION_OTHERS_CPU_SHARE, ContentionProbe, measured_share
from repro.models import MODEL_FILE
from repro.runs import Resources, Run, cached, computes
from repro.specs import Spec, digest_path, is_spec_json


# --- data --------------------------------------------------------------------------------------------------------

@computes("world")
def compute_world(spec: Spec, run: Run, resources: Resources) -> dict:
    from repro.world.build import build_world_into

    return build_world_into(spec.body, run.dir)


def ensure_world(params: Mapping, runs_root) -> Path:
    """The world's folder for `params` under runs_root/world/<hash>/, built once and reused."""
    from repro.world.build import check_params

    check_params(params)
    return cached(Spec("world", params), Resources(Path(runs_root))).dir


# data-spec flag -> (the config key of its root, what is unpacked there), for the data other than ImageNet's
_OTHER_ROOTS = {"multilabel": ("multilabel.root", "COCO 2017 (annotations/, train2017/, val2017/)"),
                "detection": ("detection.root", "COCO 2017 (annotations/, train2017/, val2017/)"),
                "task": ("transfer.root", "the transfer datasets (docs/transfer.md)")}


def data_root(data: Mapping, resources: Resources) -> Path:
    """The folder of a data spec: the world's run folder (built on first use), or the ImageNet root."""
    if data["source"] == "world":
        return cached(Spec.from_json(data["world"]), resources).dir
    root = Path(data["root"])
    for flag, (key, what) in _OTHER_ROOTS.items():
        if data.get(flag):
            if not root.is_dir():
                raise FileNotFoundError(f"{key} {root} is not a folder: unpack {what} there or set {key}")
            return root
    if not (root / "train").is_dir():
        raise FileNotFoundError(f"data.root {root} has no train/ folder (ImageNet layout expected)")
    return root


def open_data(data: Mapping, resources: Resources, train_splits=("train",)):
    from repro.data.imagenet import open_imagenet

    if data.get("multilabel"):
        from repro.data.coco import open_multilabel

        return open_multilabel(data, data_root(data, resources))
    if data.get("task"):
        from repro.data.transfer import open_transfer

        return open_transfer(data, data_root(data, resources))
    paths = {key: digest_path(value) for key, value in data.items()}
    return open_imagenet(data_root(data, resources), paths, train_splits=tuple(train_splits))


# --- models named in specs ---------------------------------------------------------------------------------------

def classifier_from_ref(ref: Mapping, wnids, resources: Resources, **overrides) -> nn.Module:
    """A classifier named in a spec, with a head over the data's classes `wnids`: a trained run (its spec), or a
    pretrained timm model, user checkpoint or plain state dict (its ref; `annotator.class_map` fits a head of
    other classes). overrides (e.g. output_stride) go to timm.create_model."""
    from repro.models import fit_head, load_classifier, load_model

    if is_spec_json(ref):
        path = cached(Spec.from_json(ref), resources).dir / MODEL_FILE  # trains the model first if needed
        return fit_head(load_model(path, **overrides), wnids, None, str(path))
    checkpoint = digest_path(ref.get("checkpoint"))
    random_head = {} if checkpoint or ref["pretrained"] else {"num_classes": len(wnids)}
    model = load_classifier(checkpoint or ref["model"]["name"], ref["model"],
                            pretrained=bool(ref["pretrained"]) and not checkpoint, **random_head, **overrides)
    return fit_head(model, wnids, digest_path(ref.get("class_map")), checkpoint or ref["model"]["name"])


def model_from_ref(ref: Mapping, wnids, resources: Resources) -> nn.Module:
    """A model named in a spec, taking crops normalised as the suite's are (a pretrained model expecting other
    constants is re-normalised)."""
    from repro.models import renormalized

    model = classifier_from_ref(ref, wnids, resources)
    return model if is_spec_json(ref) else renormalized(model)


def _initial_weights(init: Mapping | None, resources: Resources):
    from repro.train.trainer import InitialWeights

    if init is None:
        return None
    saved = torch.load(cached(Spec.from_json(init["run"]), resources).dir / MODEL_FILE, map_location="cpu",
                       weights_only=True)
    return InitialWeights(saved["state_dict"], int(saved["num_classes"]), init["reset_head"])


# --- the annotator -----------------------------------------------------------------------------------------------

@computes("annotator")
def compute_annotator(spec: Spec, run: Run, resources: Resources) -> dict:
    from repro.train.trainer import train_classifier

    data = open_data(spec["data"], resources, spec["splits"])
    return train_classifier(run, spec["train"], data, spec["objective"], seed=spec["seed"], resources=resources)


# --- label maps --------------------------------------------------------------------------------------------------

def labelmaps_store(ref: Mapping, resources: Resources) -> Path:
    """The store of a label-map ref: a labelmaps run's store, or the released maps' folder."""
    if is_spec_json(ref):
        return cached(Spec.from_json(ref), resources).dir / "store"
    return Path(ref["official"])


def open_student_labelmaps(ref: Mapping, resources: Resources, num_classes: int):
    """The label maps of a student's ref, opened: a store, read with H and W swapped where the ref is
    {"transposed": ...} (`labelmap.transpose`)."""
    from repro.labelmaps import TransposedLabelMaps, open_labelmaps

    if "transposed" in ref:
        return TransposedLabelMaps(open_student_labelmaps(ref["transposed"], resources, num_classes))
    return open_labelmaps(labelmaps_store(ref, resources), num_classes)


def store_metrics(store) -> dict:
    from repro.labelmaps import open_labelmaps

    maps = open_labelmaps(store)
    return {"labelmap_bytes_per_image": maps.bytes_per_image, **maps.describe()}


def splits_over_ranks(body: Mapping) -> bool:
    """A label-map run that is an annotator's pass over images (not a variant of stored maps nor oracle maps) into
    fixed-width arrays: under torchrun every rank annotates its share of the images."""
    return "annotator" in body and body["dtype"] != "compact"


@computes("labelmaps", split_over_ranks=lambda spec: splits_over_ranks(spec.body))
def compute_labelmaps(spec: Spec, run: Run, resources: Resources) -> dict:
    body = spec.body
    if "source" in body:  # a variant derived from stored maps
        from repro.labelmaps import derive_store

        store = derive_store(labelmaps_store(body["source"], resources), run.dir / "store", topk=body["topk"],
                             dtype=body["dtype"], classes=body.get("classes"), overwrite=True)
        return store_metrics(store)
    if "oracle" in body:
        return _oracle_labelmaps(body, run, resources)
    return _generate_labelmaps(body, run, resources)


def _oracle_labelmaps(body: Mapping, run: Run, resources: Resources) -> dict:
    """Table 10's oracle label maps: each training image's segmentation masks as the share of every grid cell each
    class covers (`repro.labelmaps.oracle.mask_label_map`), padded to the most classes any image holds."""
    from tqdm import tqdm

    from repro.data.coco import instance_masks, multilabel_split
    from repro.labelmaps.oracle import mask_label_map
    from repro.labelmaps.packed import PackedWriter, commit_dir

    split = multilabel_split(body["data"], data_root(body["data"], resources), body["split"])
    grid = int(body["grid"])
    topk = max(int(split.targets.sum(axis=1).max()), 1)  # the most categories one image holds
    partial = run.dir / "store.partial"
    writer = PackedWriter(partial, len(split), topk, (grid, grid), "fp32")
    for row in tqdm(range(len(split)), desc="oracle maps", unit="img", leave=False):  # streamed: COCO has 118k
        values, ids = mask_label_map(instance_masks(split, row), grid)
        padding = topk - len(values)  # a padded entry is class 0 with value 0: it adds nothing when pooled
        writer.write(row, F.pad(values, (0, 0, 0, 0, 0, padding))[None], F.pad(ids, (0, 0, 0, 0, 0, padding))[None])
    writer.finish(list(split.relpaths), {"num_classes": len(split.wnids), "annotator": {"oracle": "masks"}})
    commit_dir(partial, run.dir / "store", overwrite=True)
    return store_metrics(run.dir / "store")


def _generate_labelmaps(body: Mapping, run: Run, resources: Resources) -> dict:
    """The annotator's pass over the images of a split; its metrics hold the pass's wall time
    (`generation_seconds`, Section 3.3's generation cost: the annotator's own training, done first when it is
    trained here, is not part of it) and the share of images whose whole-image map agrees with their label."""
    from repro.data.folders import image_folder, read_classes, unlabelled_folder
    from repro.labelmaps.annotator import Annotator
    from repro.labelmaps import open_labelmaps
    from repro.labelmaps.generate import generate_labelmaps, generate_share, remove_shares
    from repro.train.objectives import agreeing_indices

    split = body["split"]
    root = data_root(body["data"], resources)
    if body["data"].get("multilabel"):  # Table 10's machine maps: the multi-label images, every class kept
        from repro.data.coco import multilabel_split

        images = multilabel_split(body["data"], root, split)
        wnids, root = list(images.wnids), images.images_dir
    else:
        wnids = read_classes(root)[0]
        # the extra pool's own labels (if any) are not the suite's classes: its maps are all it is labelled with
        images = unlabelled_folder(root, split) if body["unlabelled"] else image_folder(root, split, wnids)
    num_classes = len(wnids)
    model = classifier_from_ref(body["annotator"], wnids, resources, **_stride_option(body))
    probe = ContentionProbe()
    annotator = Annotator(model, description={"ref": body["annotator"], "output_stride": body["output_stride"],
                                              "num_classes": num_classes})
    # a class subset may have fewer than k; "all": every class at every position
    options = {"input_size": int(body["input_size"]), "dtype": body["dtype"],
               "topk": num_classes if body["topk"] == "all" else min(int(body["topk"]), num_classes),
               "batch_size": resources.batch_size_eval, "workers": resources.workers,
               # the students of these data skip such images too: the pass must not stop at one (val's maps, of
               # Figures 5 and A2, are of an evaluation set, which is scored whole)
               "skip_unreadable": bool(body["data"].get("skip_unreadable")) and split != "val"}
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and splits_over_ranks(body):
        # under torchrun each rank annotates its share; rank 0 joins them and records the run
        store = generate_share(annotator, list(images.relpaths), root, run.dir / "store",
                               int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), **options)
        if store is None:
            return {}
    else:
        # a job stopped after the pass, before this run was recorded, does not pass again
        store = generate_labelmaps(annotator, list(images.relpaths), root, run.dir / "store", overwrite=True,
                                   keep_finished=True, **options)
        remove_shares(run.dir / "store")  # an interrupted attempt's under torchrun
    maps = open_labelmaps(store)  # once: its index lists every image
    # timed over all the pass's sessions, after a kill or a requeue (the costs and Figure 6 compare it)
    metrics = {**store_metrics(maps), "generation_seconds": maps.settings["seconds"],
               # the ranks that made it (a store finished by an earlier attempt may have had other ranks)
               "generation_world_size": int(maps.settings.get("shares", 1)),
               GENERATION_OTHERS_CPU_SHARE: measured_share(probe),
               **({"skipped_images": len(maps.skipped_rows)} if options["skip_unreadable"] else {})}
    if not body["unlabelled"] and not body["data"].get("multilabel"):
        agreeing = agreeing_indices(maps, images, num_classes)
        # the share of the split's images whose whole-image map agrees with their label (the annotator's view), of
        # those the pass could read
        metrics[f"agreement_top1_{split}"] = 100.0 * len(agreeing) / max(len(images) - len(maps.skipped_rows), 1)
    return metrics


def _stride_option(body: Mapping) -> dict:
    # 32 is every timm classifier's own stride, and some (TResNet, Table 10's paper annotator) take no such option
    stride = int(body["output_stride"])
    return {"output_stride": stride} if stride != 32 else {}


def generated_grid(body: Mapping) -> tuple[int, int]:
    """(H, W) of the maps of the annotator's pass `body`, from its architecture on the meta device: known in
    seconds, before a pass of hours (the pre-flight check compares it with the maps it will be read beside)."""
    from repro.models import create_model, is_saved_model

    ref = body["annotator"]
    architecture = Spec.from_json(ref).body["train"]["model"] if is_spec_json(ref) else ref["model"]
    checkpoint = None if is_spec_json(ref) else digest_path(ref.get("checkpoint"))
    if checkpoint:  # one saved by the suite is rebuilt from the architecture it records, as the pass does
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        if is_saved_model(saved):
            architecture = saved["model"]
    size = int(body["input_size"])
    with torch.device("meta"):
        model = create_model(architecture, num_classes=1, **_stride_option(body))
        features = model.forward_features(torch.zeros(1, 3, size, size))
    if features.dim() != 4:
        raise ValueError(f"{architecture['name']} gives no feature map ({tuple(features.shape)}): the pass says why")
    return tuple(features.shape[-2:])


# --- the student -------------------------------------------------------------------------------------------------

@computes("train")
def compute_student(spec: Spec, run: Run, resources: Resources) -> dict:
    from repro.train.objectives import objective_class
    from repro.train.trainer import train_classifier

    body = spec.body
    data = open_data(body["data"], resources)
    objective = objective_class(body["objective"]["mode"])
    store = open_student_labelmaps(body["labelmaps"], resources, data.num_classes) if body["labelmaps"] else None
    metrics = {}
    if store is not None:
        metrics["labelmap_bytes_per_image"] = store_metrics(store)["labelmap_bytes_per_image"]
    # an objective may train on a subset (label cleaning): chosen here, before the trainer sees the data
    images, chosen = objective.training_images(body["objective"], data.train, store, data.num_classes)
    if chosen:
        run.log(f"{objective.mode} keeps {len(images)} of {len(data.train)} training images")
    data = dataclasses.replace(data, train=images)
    if body["extra_data"] is not None:
        data, store, extra = with_extra_data(body["extra_data"], data, store, resources)
        metrics.update(extra)
    teacher = None
    if objective.needs_teacher:
        teacher = model_from_ref(body["objective"]["kd_teacher"], data.wnids, resources)
        teacher = teacher.eval().requires_grad_(False)
    trained = train_classifier(run, body["train"], data, body["objective"], seed=body["seed"], resources=resources,
                               labelmaps=store, teacher=teacher, init=_initial_weights(body["train"]["init"], resources))
    return {**trained, **chosen, **metrics}


def extra_images_per_class(images: int, classes: int) -> int:
    """The pool images kept per top-1 class for `extra_data.images` in all."""
    if int(images) < classes:
        raise ValueError(f"extra_data.images = {images} is fewer than one image per class ({classes} classes): "
                         "raise it")
    return int(images) // classes


def with_extra_data(extra: Mapping, data, store, resources: Resources) -> tuple:
    """Table 5's extra data: the training set grown by images of the pool <data root>/<extra.split>, each kept
    image labelled by its ReLabel map only. The annotator labels the whole pool; `extra.images` of it are kept,
    balanced over the maps' top-1 classes. Returns (data, label maps of the grown set, summary)."""
    import numpy as np

    from repro.data.folders import ImageList
    from repro.labelmaps import ConcatLabelMaps
    from repro.labelmaps.analysis import balanced_top1_subsample

    pool = open_student_labelmaps(extra["labelmaps"], resources, data.num_classes)
    per_class = extra_images_per_class(extra["images"], data.num_classes)
    rows, top1 = balanced_top1_subsample(pool, per_class)
    kept = ImageList(data.root, tuple(pool.paths[row] for row in rows), top1)
    train = ImageList(data.root, data.train.relpaths + kept.relpaths, np.concatenate([data.train.labels, top1]))
    maps = ConcatLabelMaps([(store, store.rows_for(data.train.relpaths)), (pool, rows)], train.relpaths)
    per_class_counts = np.bincount(top1, minlength=data.num_classes)
    summary = {"extra_pool_images": pool.num_images, "extra_images": len(kept),
               "extra_images_per_class_min": int(per_class_counts.min()),
               "extra_images_per_class_max": int(per_class_counts.max())}
    return dataclasses.replace(data, train=train), maps, summary


# --- evaluations -------------------------------------------------------------------------------------------------

@computes("eval")
def compute_evaluation(spec: Spec, run: Run, resources: Resources) -> dict:
    from repro.evaluate.evaluators import build_evaluator

    body = spec.body
    data = open_data(body["data"], resources)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model_from_ref(body["model"], data.wnids, resources).to(device)
    return build_evaluator(body["evaluator"]).evaluate(model, data, body["view"], resources)


@computes("evalset")
def compute_evalset(spec: Spec, run: Run, resources: Resources) -> dict:
    """The world's analogue of a robustness set in <run>/images/, in the released set's layout
    (`repro.world.robustness`). Half-written images of a killed build are rewritten (the ImageNet-C analogue skips
    the ones that exist: each is a function of its options and index)."""
    import shutil

    from repro.data.folders import image_folder, read_classes
    from repro.world import robustness as sets
    from repro.world.parts import load_assets

    body = spec.body
    world_root = cached(Spec.from_json(body["world"]), resources).dir
    params = Spec.from_json(body["world"]).body
    out = run.dir / "images"
    wnids = read_classes(world_root)[0]
    indices = sets.val_subset(len(wnids), params["n_val"], int(body["per_class"]))
    if body["set"] == "imagenet_c":
        val = image_folder(world_root, "val", wnids)
        wanted = set(indices)
        chosen = [i for i, relpath in enumerate(val.relpaths) if _val_index(relpath) in wanted]
        written = sets.write_imagenet_c(world_root, [val.relpaths[i] for i in chosen], val.labels[chosen], out,
                                        body["corruptions"], body["severities"], int(body["seed"]),
                                        int(body["size"]), float(body["crop_pct"]))
        return {"images_per_corruption": len(chosen), "images_written": written}
    shutil.rmtree(out, ignore_errors=True)
    assets = load_assets(params)
    if body["set"] == "backgrounds":
        return sets.write_backgrounds(assets, world_root, indices, out, int(body["seed"]))
    if body["set"] == "imagenet_a":
        return _adversarial_filter(body, assets, wnids, run, resources)
    raise ValueError(f"unknown robustness set {body['set']!r}")


def _val_index(relpath: str) -> int:
    """A world val image's index from its name (ILSVRC2012_val_<index + 1>, ReaL's naming)."""
    from repro.data.labelsets import VAL_NAME

    return int(VAL_NAME.search(Path(relpath).name).group(1)) - 1


def _adversarial_filter(body: Mapping, assets, wnids, run: Run, resources: Resources) -> dict:
    """ImageNet-A's construction: fresh images, of which those the filter model (an independently trained
    classifier, never one that is evaluated on the set) misclassifies are kept."""
    import shutil

    from repro.data.folders import ImageList
    from repro.evaluate.classification import predict_logits
    from repro.world import robustness as sets

    candidates = run.dir / "candidates"
    shutil.rmtree(candidates, ignore_errors=True)
    drawn = sets.write_candidates(assets, int(body["candidates_per_class"]) * len(wnids), candidates)
    images = ImageList(candidates, tuple(p for p, _ in drawn), np.asarray([label for _, label in drawn]))
    filter_spec = Spec.from_json(body["filter"])
    model = model_from_ref(body["filter"], wnids, resources).to("cuda" if torch.cuda.is_available() else "cpu")
    train = filter_spec["train"]
    logits = predict_logits(model, images, size=int(train["eval_size"]), crop_pct=float(train["eval_crop_pct"]),
                            batch_size=resources.batch_size_eval, workers=resources.workers)
    wrong = logits.argmax(dim=1).numpy() != images.labels
    out = run.dir / "images"
    for relpath in np.asarray(images.relpaths)[wrong]:
        (out / relpath).parent.mkdir(parents=True, exist_ok=True)
        (candidates / relpath).rename(out / relpath)
    shutil.rmtree(candidates)
    kept = np.bincount(images.labels[wrong], minlength=len(wnids))
    return {"drawn": len(images), "kept": int(wrong.sum()), "kept_share": float(wrong.mean()),
            "kept_per_class_min": int(kept.min()), "kept_per_class_max": int(kept.max()),
            "filter_top1_on_candidates": 100.0 * float(1 - wrong.mean())}


# --- detection ---------------------------------------------------------------------------------------------------

@computes("detector")
def compute_detector(spec: Spec, run: Run, resources: Resources) -> dict:
    from repro.detection import train_detector  # mmdet and mmengine are imported there, only for these runs

    return train_detector(spec, run, resources)
