"""From a config to run specs, and from specs to results: data -> annotator -> label maps -> student -> evaluation.

Each builder turns a config into the frozen spec of one cached step (`repro.specs.Spec`, hashed whole); each
step's compute (`repro.steps`) reads only its spec. A spec holds the specs of the runs it needs, so students
that differ only in their supervision share one world, one annotator and one set of label maps, and a student's
seed never retrains the annotator. At paper scale the data are ImageNet folders and the annotator a pretrained
timm model (or the released label maps are given directly); the embedded scale builds the world and trains the
annotator on its extra pool. Both go through the same functions.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from repro import steps
from repro.config import architecture_changes, deep_update, profile_config, with_changes
from repro.evaluate.evaluators import evaluator_spec
from repro.runs import Resources, Run, cached, stored_spec
from repro.specs import Spec, file_digest, is_spec_json, tree_digest, without_former_defaults
from repro.train.objectives import objective_class, objective_spec

# Label maps are generated once with this many classes per cell; Table 6's smaller k and dtypes are derived.
BASE_TOPK = 10
# data-section keys naming a user's file: they enter a spec by content
_DATA_FILES = ("val_labels", "real_json", "shankar_json", "boxes_csv")


def resources(cfg: Mapping, runs_root: str | os.PathLike) -> Resources:
    return Resources(Path(runs_root), int(cfg["resources"]["workers"]), int(cfg["resources"]["batch_size_eval"]),
                     float(cfg["resources"]["checkpoint_minutes"]))


# --- data --------------------------------------------------------------------------------------------------------

def world_spec(cfg: Mapping) -> Spec:
    if cfg["world"] is None:
        raise ValueError(f"data.source is 'world' but the {cfg['profile']} profile has no world: set data.source "
                         "to 'imagenet' and data.root to an ImageNet folder")
    return Spec("world", cfg["world"])


def data_spec(cfg: Mapping) -> dict:
    """The whole `data` section, a user's label files by content and the world by its spec."""
    data = without_former_defaults("data", cfg["data"])
    for key in _DATA_FILES:
        if data.get(key):
            data[key] = file_digest(data[key], f"data.{key}")
    data["world"] = world_spec(cfg).as_json() if data["source"] == "world" else None
    if data["source"] != "world":
        data["root"] = absolute(data["root"])
        if data.get("v2_root"):
            data["v2_root"] = absolute(data["v2_root"])
    return data


def absolute(path: str | os.PathLike | None) -> str | None:
    """A data root as the specs name it: absolute, so that a relative --set read from another working directory
    (other images) is another run, not a cached one; symlinks are kept, so a fixed link to data staged per job
    stays one path. None: not set (the check names the key)."""
    return None if path is None else os.path.abspath(path)


def transfer_data_spec(cfg: Mapping) -> dict:
    """The data of a fine-tune on the transfer task `data.task` (Table 8): the world's downstream task, or a
    torchvision dataset under `transfer.root`, with the held-out share its grid is chosen on."""
    transfer, task = cfg["transfer"], cfg["data"]["task"]
    if task not in transfer["tasks"]:
        raise ValueError(f"data.task {task!r} is not one of transfer.tasks ({', '.join(transfer['tasks'])})")
    world = cfg["data"]["source"] == "world"
    return {"source": "world" if world else "torchvision", "world": world_spec(cfg).as_json() if world else None,
            "root": None if world else absolute(transfer["root"]), "task": task, "heldout": float(transfer["heldout"]),
            "heldout_seed": int(transfer["heldout_seed"]), **_skipping(cfg)}


def _skipping(cfg: Mapping) -> dict:
    """`data.skip_unreadable` for the data of Tables 8 and 10, named only where set (specs without it predate
    it)."""
    return {"skip_unreadable": True} if cfg["data"].get("skip_unreadable") else {}


def coco_data_spec(cfg: Mapping, section: str) -> dict:
    """COCO-format data read for `section` ("multilabel": Table 10, "detection": Table 9): the world's detection
    split, or COCO 2017 under `<section>.root`; the section's name is the spec's flag."""
    world = cfg["data"]["source"] == "world"
    return {"source": "world" if world else "coco", "world": world_spec(cfg).as_json() if world else None,
            "root": None if world else absolute(cfg[section]["root"]), section: True}


def multilabel_data_spec(cfg: Mapping) -> dict:
    """The COCO-format multi-label data of Table 10."""
    return {**coco_data_spec(cfg, "multilabel"), **_skipping(cfg)}


def data_root(cfg: Mapping, runs_root: str | os.PathLike) -> Path:
    return steps.data_root(data_spec(cfg), resources(cfg, runs_root))


# --- the annotator -----------------------------------------------------------------------------------------------

def annotator_recipe(cfg: Mapping) -> dict:
    """The trained annotator's `train` section: the profile's base recipe with the annotator's model and its
    `annotator.train` changes (epochs, resolution, batch size, crop scale). It reads neither the student's
    recipe nor its supervision, so every student of a profile shares one annotator."""
    annotator = cfg["annotator"]
    train = deep_update(profile_config(cfg["profile"])["train"], annotator.get("train", {}))
    train["model"] = dict(annotator["model"])  # replaced whole: the student's model kwargs must not leak in
    return train


def annotator_spec(cfg: Mapping) -> Spec:
    """The annotator trained by the suite on the extra pool and the training set, with single labels only."""
    annotator = cfg["annotator"]
    if annotator["source"] != "train":
        raise ValueError(f"annotator.source is {annotator['source']!r}: only a 'train' annotator is a run")
    if "train" not in annotator:  # the paper profile's annotator is L2, pretrained on JFT-300M: no recipe here
        raise ValueError(f"annotator.source=train needs the annotator's recipe (annotator.train), which the "
                         f"{cfg['profile']} profile does not define: use a pretrained timm annotator "
                         "(annotator.source=timm) or a saved one (annotator.checkpoint)")
    base = profile_config(cfg["profile"])["supervision"]
    return Spec("annotator", {"data": data_spec(cfg), "seed": annotator["seed"], "splits": ["extra", "train"],
                              "train": without_former_defaults("train", annotator_recipe(cfg)),
                              "objective": objective_spec(base)})


def annotator_ref(cfg: Mapping) -> dict:
    """The annotator of `cfg` as it enters other specs: a trained annotator by its spec; a pretrained one by its
    timm name, or by its checkpoint's content."""
    annotator = cfg["annotator"]
    if annotator["source"] == "train":
        return annotator_spec(cfg).as_json()
    checkpoint, class_map = annotator.get("checkpoint"), annotator.get("class_map")
    return {"source": annotator["source"], "model": annotator["model"], "pretrained": bool(annotator["pretrained"]),
            "checkpoint": file_digest(checkpoint, "annotator.checkpoint") if checkpoint else None,
            # only where set: refs made before the key existed keep their hash
            **({"class_map": class_map if class_map == "imagenet-1k"
                else file_digest(class_map, "annotator.class_map")} if class_map else {})}


def annotator_run(cfg: Mapping, runs_root: str | os.PathLike) -> Run:
    return cached(annotator_spec(cfg), resources(cfg, runs_root))


def annotator_top1(cfg: Mapping, runs_root: str | os.PathLike) -> float:
    """The annotator's own val top-1 (Figure 4's x-axis): from its training run, or, for a pretrained annotator,
    from one evaluation at the resolution and crop its weights were made for."""
    return float(cached(annotator_top1_spec(cfg), resources(cfg, runs_root)).metrics["imagenet_top1"])


def annotator_top1_spec(cfg: Mapping) -> Spec:
    """The run `annotator_top1` reads (an experiment that reports it plans it): the annotator's training run, or a
    pretrained annotator's evaluation."""
    return annotator_spec(cfg) if cfg["annotator"]["source"] == "train" else annotator_eval_spec(cfg)


def annotator_eval_spec(cfg: Mapping) -> Spec:
    import timm
    from timm.data import resolve_data_config

    # the resolution, crop and resize filter its weights were made for (EfficientNets: bicubic)
    pretrained = timm.models.get_pretrained_cfg(cfg["annotator"]["model"]["name"])
    view = resolve_data_config({}, pretrained_cfg=pretrained.to_dict())
    return Spec("eval", {"model": annotator_ref(cfg), "data": data_spec(cfg), "evaluator": evaluator_spec({"type": "topk"}),
                         "view": {"size": int(view["input_size"][-1]), "crop_pct": float(view["crop_pct"]),
                                  "interpolation": view["interpolation"], "amp": bool(cfg["train"]["amp"]),
                                  "channels_last": False}})


def teacher_input_size(cfg: Mapping) -> int:
    """The resolution the annotator of `cfg` was trained at (its crops), or its pretrained weights' input size."""
    annotator = cfg["annotator"]
    if annotator["source"] == "train":
        return int(annotator_recipe(cfg)["crop_size"])
    import timm

    return int(timm.models.get_pretrained_cfg(annotator["model"]["name"]).input_size[-1])


def kd_changes(teacher_cfg: Mapping) -> dict:
    """Config changes that make a student learn by KD from the annotator of `teacher_cfg`, fed at its resolution."""
    return {"supervision.mode": "kd", "supervision.kd_teacher": annotator_ref(teacher_cfg),
            "supervision.kd_input_size": teacher_input_size(teacher_cfg)}


# --- label maps --------------------------------------------------------------------------------------------------

def generated_labelmaps_spec(cfg: Mapping, split: str = "train") -> Spec:
    """The annotator's pass over the images of `split` at BASE_TOPK, fp32."""
    lm = cfg["labelmap"]
    return Spec("labelmaps", {"annotator": annotator_ref(cfg), "data": data_spec(cfg), "split": split,
                              "unlabelled": split == cfg["extra_data"]["split"], "input_size": lm["input_size"],
                              "output_stride": lm["output_stride"], "topk": BASE_TOPK, "dtype": "fp32"})


def official_ref(directory: str | os.PathLike) -> dict:
    """The released label maps by their folder and a digest of their files (sizes and mtimes)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"labelmap.official_dir {directory} is not a folder: point it at the released "
                                "label maps (<wnid>/<image>.pt)")
    return {"official": absolute(directory), "digest": tree_digest(directory)}


def _stored_variant(cfg: Mapping, split: str) -> tuple[dict, int, str, list[str] | None]:
    """(the maps that are stored: released or generated, their top-k, their dtype, and the data's wnids where
    the released maps' ImageNet-1k ids must be renumbered to a subset of its classes)."""
    official = cfg["labelmap"].get("official_dir")
    if reads_released_maps(cfg, split):
        from repro.labelmaps import open_labelmaps

        ref = official_ref(official)  # first: its error names the key
        stored = open_labelmaps(official).describe()
        return (ref, int(stored["topk"]), str(stored["dtype"]),
                _released_maps_renumbering(cfg, int(stored["num_classes"])))
    return generated_labelmaps_spec(cfg, split).as_json(), BASE_TOPK, "fp32", None


def reads_released_maps(cfg: Mapping, split: str) -> bool:
    """Whether a student of `cfg` reads the maps of `labelmap.official_dir` for `split` (the released maps cover the
    training images only; every other split's maps are generated)."""
    return bool(cfg["labelmap"].get("official_dir")) and split == "train"


def _released_maps_renumbering(cfg: Mapping, maps_classes: int) -> list[str] | None:
    """The data's wnids where they are a proper subset of ImageNet-1k's (the released maps' ids are ImageNet-1k
    class indices); None where the data's classes are the maps' own. Any other mismatch is an error."""
    from repro.data.folders import read_classes
    from repro.data.imagenet import released_maps_classes

    if cfg["data"]["source"] != "imagenet":
        return None
    return released_maps_classes(read_classes(cfg["data"]["root"])[0], maps_classes,
                                 f"labelmap.official_dir {cfg['labelmap']['official_dir']}")


def stored_topk(cfg: Mapping, split: str = "train") -> int:
    """Classes per cell of the stored maps a student of `cfg` derives its variant from (released or generated)."""
    return _stored_variant(cfg, split)[1]


def stored_labelmaps_ref(cfg: Mapping, split: str = "train") -> dict:
    """The label maps on disk that a student of `cfg` reads for `split`: the stored maps themselves, or a variant
    with fewer classes per cell or bits per value derived from them (Table 6's variants cost no second annotator
    pass), or the released maps renumbered to the data's subset of ImageNet-1k's classes."""
    lm = cfg["labelmap"]
    topk, dtype = int(lm["topk"]), lm["dtype"]
    source, stored_topk, stored_dtype, classes = _stored_variant(cfg, split)
    if topk > stored_topk:
        raise ValueError(f"labelmap.topk = {topk} but the stored maps keep {stored_topk} classes per cell: choose "
                         f"labelmap.topk <= {stored_topk}")
    if classes is not None:
        return Spec("labelmaps", {"source": source, "topk": topk, "dtype": dtype, "classes": classes}).as_json()
    if topk == stored_topk and dtype in (stored_dtype, "fp32"):  # fp32 of fp16 values loses nothing
        return source
    return Spec("labelmaps", {"source": source, "topk": topk, "dtype": dtype}).as_json()


def labelmaps_ref(cfg: Mapping, split: str = "train") -> dict:
    """The label maps a student of `cfg` reads for `split`, as its spec holds them: the stored ones' ref, or for the
    released maps under `labelmap.transpose` {"transposed": that ref} (read with H and W swapped; the false default
    adds nothing, so the specs of students that read maps as stored are unchanged). The maps the suite generates
    (Table 5's extra pool among them) are [k, H, W] by construction and always read as stored."""
    ref = stored_labelmaps_ref(cfg, split)
    if not cfg["labelmap"].get("transpose"):
        return ref
    if not cfg["labelmap"].get("official_dir"):
        raise ValueError("labelmap.transpose = true turns the released maps of labelmap.official_dir, which is not "
                         "set; the maps the suite generates are [k, H, W]: set labelmap.transpose=false")
    return {"transposed": ref} if reads_released_maps(cfg, split) else ref


def multilabel_annotator_ref(cfg: Mapping) -> dict:
    """Table 10's machine annotator: a user's multi-label checkpoint (paper scale), or the ImageNet-stage annotator
    fine-tuned here by BCE on the multi-label training images (`multilabel.annotator.train`), by its spec."""
    annotator = cfg["multilabel"]["annotator"]
    if annotator["train"] is None:
        if not annotator["checkpoint"]:
            raise ValueError("multilabel.annotator.checkpoint is not set: give a multi-label classifier's weights "
                             f"for multilabel.annotator.model ({annotator['model']['name']}; the paper: ASL's "
                             "TResNet-XL, COCO mAP 88.4), or set multilabel.annotator.train to train one here")
        return {"source": "timm", "model": annotator["model"], "pretrained": False,
                "checkpoint": file_digest(annotator["checkpoint"], "multilabel.annotator.checkpoint")}
    if cfg["annotator"]["source"] != "train":
        raise ValueError("multilabel.annotator.train fine-tunes the suite's trained annotator, but annotator.source "
                         f"is {cfg['annotator']['source']!r}: give multilabel.annotator.checkpoint instead")
    if annotator["model"] != cfg["annotator"]["model"]:
        raise ValueError(f"multilabel.annotator.model {annotator['model']} is not annotator.model "
                         f"{cfg['annotator']['model']}: a trained machine annotator starts from the suite's annotator")
    imagenet = with_changes(cfg, {"data.multilabel": False})  # the ImageNet-stage annotator, as every table has it
    recipe = deep_update(annotator_recipe(imagenet), {**cfg["multilabel"]["train"], **annotator["train"]})
    # the world's detection categories are the world's classes in the same order: the head is kept
    recipe["init"] = {"run": annotator_spec(imagenet).as_json(), "reset_head": None}
    return student_spec(with_changes(cfg, {"train": recipe, "data.multilabel": True, "supervision.mode": "multi_hot",
                                           "supervision.cutmix": False, "extra_data.enabled": False,
                                           "seed": cfg["annotator"]["seed"]})).as_json()


def multilabel_labelmaps_ref(cfg: Mapping) -> dict:
    """The label maps of a Table 10 student: the oracle maps made from the training images' masks, or the machine
    annotator's pass over them, every class kept at every position (a sigmoid target needs each class's logit)."""
    data, multilabel = multilabel_data_spec(cfg), cfg["multilabel"]
    if cfg["supervision"]["mode"] == "multilabel_oracle":
        return Spec("labelmaps", {"oracle": "masks", "data": data, "split": "train",
                                  "grid": int(multilabel["grid"])}).as_json()
    annotator = multilabel["annotator"]
    return Spec("labelmaps", {"annotator": multilabel_annotator_ref(cfg), "data": data, "split": "train",
                              "unlabelled": False, "input_size": int(annotator["input_size"]),
                              "output_stride": int(annotator["output_stride"]), "topk": "all",
                              "dtype": "fp16"}).as_json()


def labelmaps_specs(cfg: Mapping, split: str = "train") -> list[Spec]:
    """The label-map run a student of `cfg` reads for `split` (none when it reads the released maps as they are)."""
    ref = stored_labelmaps_ref(cfg, split)
    return [Spec.from_json(ref)] if is_spec_json(ref) else []


def labelmaps_dir(cfg: Mapping, runs_root: str | os.PathLike, split: str = "train") -> Path:
    """The folder of the label maps a student of `cfg` reads for `split` (val for Figures 5 and A2), as stored."""
    return steps.labelmaps_store(stored_labelmaps_ref(cfg, split), resources(cfg, runs_root))


def student_labelmaps(cfg: Mapping, runs_root: str | os.PathLike, split: str = "train"):
    """The label maps a student of `cfg` reads for `split`, opened as it reads them (`labelmap.transpose`
    included): what an analysis of its targets must pool."""
    return steps.open_student_labelmaps(labelmaps_ref(cfg, split), resources(cfg, runs_root), num_classes=None)


def generated_labelmaps(cfg: Mapping, runs_root: str | os.PathLike, split: str = "train") -> Run:
    """The annotator's pass over `split`; its metrics hold the pass's wall time (`generation_seconds`) and the
    share of images whose whole-image map agrees with their label."""
    return cached(generated_labelmaps_spec(cfg, split), resources(cfg, runs_root))


# --- the student -------------------------------------------------------------------------------------------------

def _init_ref(init: Mapping | None, runs_root: str | os.PathLike | None) -> dict | None:
    """`train.init` with its run as a spec: given as a spec (or its JSON), or as the hash of a run in the cache."""
    if init is None:
        return None
    if not isinstance(init, Mapping) or "run" not in init:
        raise ValueError(f"train.init must be null or {{\"run\": <hash or spec>, \"reset_head\": N or \"data\"}}, "
                         f"got {init!r}")
    run = init["run"]
    if isinstance(run, Spec):
        run = run.as_json()
    elif isinstance(run, str):
        if runs_root is None:
            raise ValueError("train.init names a run by its hash: the run cache is needed to read its spec")
        run = stored_spec("train", run, runs_root).as_json()
    elif not is_spec_json(run):
        raise ValueError(f"train.init.run must be a train run's hash or spec, got {run!r}")
    reset_head = init.get("reset_head")
    if reset_head not in (None, "data"):
        reset_head = int(reset_head)
    return {"run": Spec.from_json(run).as_json(), "reset_head": reset_head}


def student_spec(cfg: Mapping, runs_root: str | os.PathLike | None = None) -> Spec:
    """A student: its data, seed, whole `train` section, its objective's fields, and the specs of its label maps
    (if its objective reads them), of its extra data and of the run it starts from."""
    supervision = cfg["supervision"]
    objective = objective_class(supervision["mode"])
    train = without_former_defaults("train", cfg["train"])
    if train["opt"] in ("momentum", "nesterov") and bool(train["nesterov"]) != (train["opt"] == "nesterov"):
        raise ValueError(f"train.opt={train['opt']} conflicts with train.nesterov={train['nesterov']}, which "
                         "decides for SGD: set train.opt=sgd and train.nesterov to true or false")
    train["init"] = _init_ref(train.get("init"), runs_root)
    extra = cfg["extra_data"]
    extra_data = None
    if extra["enabled"]:
        if supervision["mode"] != "relabel":
            raise ValueError(f"extra_data needs supervision.mode 'relabel', not {supervision['mode']!r}: the "
                             "pool's images carry no labels of the suite's classes, only their label maps")
        extra_data = {"split": extra["split"], "images": int(extra["images"]),
                      "labelmaps": labelmaps_ref(cfg, extra["split"])}
    multilabel = cfg["data"].get("multilabel")
    data = (transfer_data_spec(cfg) if cfg["data"].get("task") else
            multilabel_data_spec(cfg) if multilabel else data_spec(cfg))
    labelmaps = None
    if objective.reads_labelmaps(supervision):
        labelmaps = multilabel_labelmaps_ref(cfg) if multilabel else labelmaps_ref(cfg)
    return Spec("train", {"data": data, "seed": cfg["seed"], "train": train,
                          "objective": objective_spec(supervision),
                          "labelmaps": labelmaps,
                          "extra_data": extra_data})


def student_run(cfg: Mapping, runs_root: str | os.PathLike) -> Run:
    return cached(student_spec(cfg, runs_root), resources(cfg, runs_root))


def train_student(cfg: Mapping, runs_root: str | os.PathLike) -> dict:
    """The student's metrics (evaluation on every set the data have, plus training cost), trained once."""
    return student_run(cfg, runs_root).metrics


def students_per_seed(cfg: Mapping, seeds, changes: Mapping, runs_root=None) -> list[Spec]:
    """The specs of the student of `cfg` changed by `changes`, one per seed (an experiment's plan)."""
    return [student_spec(with_changes(cfg, {**changes, "seed": seed}), runs_root) for seed in seeds]


# --- evaluations -------------------------------------------------------------------------------------------------

def eval_spec(model: Spec, evaluator: Mapping) -> Spec:
    """Evaluating a trained model (a train or annotator run) with an evaluator given as data; the view is the
    model's own (train.eval_size, eval_crop_pct) unless the evaluator sets `size` / `crop_pct`."""
    options = dict(evaluator)
    train = model["train"]
    view = {"size": int(options.pop("size", None) or train["eval_size"]),
            "crop_pct": float(options.pop("crop_pct", None) or train["eval_crop_pct"]),
            "amp": bool(train["amp"]), "channels_last": bool(train["channels_last"])}
    return Spec("eval", {"model": model.as_json(), "data": model["data"], "evaluator": evaluator_spec(options),
                         "view": view})


def evaluate_student(cfg: Mapping, evaluator: Mapping, runs_root: str | os.PathLike) -> dict:
    """The metrics of one evaluation of the student of `cfg` (trained first if it is not in the cache)."""
    return cached(eval_spec(student_spec(cfg, runs_root), evaluator), resources(cfg, runs_root)).metrics


def annotator_report(cfg: Mapping, runs_root: str | os.PathLike, seed: int = 0) -> str:
    """The annotator's quality beside the original-label student of the same recipe, as printed by the ReLabel
    tables: ReLabel can only help when the annotator is clearly better than that student."""
    lines = []
    if cfg["annotator"]["source"] == "train":  # a pretrained annotator's top-1 would cost an evaluation here
        top1 = annotator_top1(cfg, runs_root)
        lines.append(f"annotator: val top-1 {top1:.2f}% ({cfg['annotator']['model']['name']}, "
                     f"{cfg['annotator']['train']['crop_size']} px crops, extra + train)")
        original = Run(student_spec(with_changes(cfg, {"supervision.mode": "original", "seed": seed,
                                                       "supervision.cutmix": False})), runs_root)
        if original.done:
            margin = top1 - original.metrics["imagenet_top1"]
            lines.append(f"annotator margin over the original-label student (seed {seed}): {margin:+.2f} pp")
    if not cfg["labelmap"].get("official_dir"):
        agreement = generated_labelmaps(cfg, runs_root).metrics["agreement_top1_train"]
        lines.append(f"whole-image label map agrees with the training label on {agreement:.1f}% of training images")
    return "\n".join(lines)


# --- Table 7's robustness sets -------------------------------------------------------------------------------------

ROBUSTNESS_SETS = {"imagenet_c": "imagenet-c", "imagenet_a": "imagenet-a", "rendition": "imagenet-r",
                   "backgrounds": "backgrounds"}  # evaluator type -> its folder under the paper scale's data root


def robustness_evaluations(cfg: Mapping, runs_root: str | os.PathLike | None = None) -> list[dict]:
    """Table 7's evaluators as data. Each set's `source`: at paper scale `robustness.<set>_root` (default
    <data.root>/<folder>); at embedded scale the spec of the world's analogue (an evalset run; the rendition set is
    the world's own rendition/ folder), so the sets' options and the world are in every evaluation's hash."""
    rob = cfg["robustness"]
    # ImageNet-C's images are already the val images' centre crops at the eval size: scored whole, as its test
    # script scores them (CenterCrop(224) of a 224 image), not cropped a second time by the student's view
    whole = {"crop_pct": 1.0}
    evaluations = [{"type": "fgsm", "epsilon": rob["fgsm_epsilon"], "epsilons": list(rob["fgsm_epsilons"])}]
    challenge = {"challenge_backgrounds": rob["challenge_backgrounds"], "seed": int(rob["seed"])}
    if cfg["data"]["source"] == "imagenet":
        root = Path(cfg["data"]["root"])
        return evaluations + [{"type": kind, "source": absolute(rob[f"{kind}_root"] or root / folder),
                               **(challenge if kind == "backgrounds" else {}),
                               **(whole if kind == "imagenet_c" else {})}
                              for kind, folder in ROBUSTNESS_SETS.items()]
    world = world_spec(cfg).as_json()
    common = {"world": world, "per_class": int(rob["per_class"]), "seed": int(rob["seed"])}
    from repro.evaluate.corruptions import CORRUPTIONS, SEVERITIES

    corrupted = Spec("evalset", {**common, "set": "imagenet_c", "corruptions": list(CORRUPTIONS),
                                 "severities": list(SEVERITIES), "size": int(cfg["train"]["eval_size"]),
                                 "crop_pct": float(cfg["train"]["eval_crop_pct"])})
    backgrounds = Spec("evalset", {**common, "set": "backgrounds"})
    filter_cfg = with_changes(cfg, {**architecture_changes(cfg, rob["filter_arch"]), "supervision.mode": "original",
                                    "supervision.cutmix": False, "extra_data.enabled": False,
                                    "seed": int(rob["filter_seed"])})
    adversarial = Spec("evalset", {"world": world, "set": "imagenet_a", "per_class": 0, "seed": int(rob["seed"]),
                                   "candidates_per_class": int(rob["candidates_per_class"]),
                                   "filter": student_spec(filter_cfg, runs_root).as_json()})
    return evaluations + [{"type": "imagenet_c", "source": corrupted.as_json(), **whole},
                          {"type": "imagenet_a", "source": adversarial.as_json()},
                          {"type": "rendition", "source": None},
                          {"type": "backgrounds", "source": backgrounds.as_json(), **challenge}]
