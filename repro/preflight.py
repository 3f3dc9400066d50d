"""The pre-flight check: everything a run reads from outside the cache, looked at in seconds before any training
step (`python -m repro check`, and every experiment before it computes).

It follows the specs, not the config: the data folders, the released label maps and the pretrained annotators
or teachers that the runs to compute actually name. Each finding is one line; a problem names the path or key and
what to do.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from repro.plan import released_maps, with_inputs
from repro.specs import Spec, is_spec_json

OK, ABSENT, PROBLEM = "ok", "absent", "problem"


@dataclass(frozen=True)
class Finding:
    level: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


def preflight(specs: Iterable[Spec]) -> list[Finding]:
    """Findings for the inputs of `specs` and of every run they need."""
    ordered = with_inputs(specs)
    findings: list[Finding] = []
    datas = _unique(spec.body["data"] for spec in ordered if isinstance(spec.body.get("data"), Mapping))
    wnids_of = {}
    for data in datas:
        found, wnids = check_data(data)
        findings += found
        if wnids is not None:
            wnids_of[data["root"]] = (wnids, data)
    for spec in ordered:
        data = spec.body.get("data")
        wnids = wnids_of.get(data["root"])[0] if isinstance(data, Mapping) and data["root"] in wnids_of else None
        for ref in released_maps(spec.body):
            findings += check_released_maps(ref, data, wnids)
        for ref in _pretrained_refs(spec.body):
            findings += check_pretrained(ref, wnids)
    return list(dict.fromkeys(findings))


def _unique(items: Iterable[Mapping]) -> list[Mapping]:
    seen = {}
    for item in items:
        seen.setdefault(repr(sorted(item.items())), item)
    return list(seen.values())


def _pretrained_refs(value) -> Iterable[dict]:
    """Annotators and teachers given by timm name or user checkpoint (not trained runs) anywhere in a spec."""
    if isinstance(value, Mapping):
        if {"source", "model", "pretrained", "checkpoint"} <= set(value) and not is_spec_json(value):
            yield value
            return
        for item in value.values():
            yield from _pretrained_refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _pretrained_refs(item)


# --- the data ----------------------------------------------------------------------------------------------------

def check_data(data: Mapping) -> tuple[list[Finding], list[str] | None]:
    """The layout of an ImageNet installation: classes, train, val (either layout), ReaL, ImageNetV2."""
    from repro.data.folders import image_folder, read_classes, val_folder
    from repro.data.imagenet import IMAGENET_V2

    if data["source"] == "world":
        return [Finding(OK, "data: the generated world (built by the suite)")], None
    root = Path(data["root"])
    if not (root / "train").is_dir():
        return [Finding(PROBLEM, f"data.root {root} has no train/ folder: point data.root at the folder holding "
                                 "ImageNet's train/ and val/ (docs/paper-scale.md)")], None
    findings = []
    try:
        wnids = read_classes(root)[0]
        train = image_folder(root, "train", wnids)
    except (OSError, ValueError) as error:
        return [Finding(PROBLEM, f"data.root {root}: {error}")], None
    findings.append(Finding(OK if len(train) else PROBLEM,
                            f"train: {len(train)} images in {len(wnids)} classes under {root / 'train'}"))
    val = None
    if not (root / "val").is_dir():
        findings.append(Finding(PROBLEM, f"no val/ under {root}: every table scores the val images; unpack "
                                         "ImageNet's validation tarball there"))
    else:
        try:
            val = val_folder(root, wnids, _path(data.get("val_labels")))
            flat = bool(val.relpaths) and val.relpaths[0].count("/") == 1
            layout = "flat, labelled by " + str(_path(data.get("val_labels")) or root / "LOC_val_solution.csv") \
                if flat else "class folders"
            findings.append(Finding(OK if len(val) else PROBLEM, f"val: {len(val)} images ({layout})"))
        except (OSError, ValueError) as error:
            findings.append(Finding(PROBLEM, f"val: {error}"))
    if val is not None and len(val):
        findings += _check_label_sets(data, root, val, wnids)
    v2_root = Path(_path(data.get("v2_root")) or root / "v2")
    for name, folder in IMAGENET_V2.items():
        present = (v2_root / folder).is_dir()
        findings.append(Finding(OK if present else ABSENT,
                                f"{name}: {v2_root / folder}" + ("" if present else " not found (its columns stay "
                                                                 "empty; put the folder there or set data.v2_root)")))
    return findings, wnids


def _path(value):
    return value["path"] if isinstance(value, Mapping) else value


def _check_label_sets(data: Mapping, root: Path, val, wnids) -> list[Finding]:
    import json

    from repro.data.imagenet import imagenet_label_sets
    from repro.data.labelsets import read_label_sets, timm_real_json

    findings = []
    for key, default in (("real_json", root / "real.json"), ("shankar_json", root / "shankar.json")):
        path = _path(data.get(key))
        path = Path(path) if path else default if default.exists() else None
        name = key.removesuffix("_json")
        if path is None:
            if key == "real_json" and data["source"] == "imagenet":
                sets = imagenet_label_sets(val, wnids)
                findings.append(Finding(OK if sets is not None else ABSENT,
                                        f"real: timm's copy of ReaL ({timm_real_json().name})" if sets is not None
                                        else "real: the data's classes are not ImageNet-1k's; set data.real_json"))
            else:
                findings.append(Finding(ABSENT, f"{name}: no data.{key} and no {default}"))
            continue
        try:
            entries = len(json.loads(path.read_text()))
            read_label_sets(path, val, len(wnids))
            findings.append(Finding(OK, f"{name}: {path} ({entries} entries for {len(val)} val images)"))
        except (OSError, ValueError) as error:
            findings.append(Finding(PROBLEM, f"{name}: {error}"))
    return findings


# --- label maps and annotators -----------------------------------------------------------------------------------

def check_released_maps(ref: Mapping, data: Mapping | None, wnids) -> list[Finding]:
    """The released maps' class ids against the data's classes and their coverage of the training images."""
    from repro.data.folders import image_folder
    from repro.data.imagenet import imagenet_subset_indices
    from repro.labelmaps import LabelMapError, open_labelmaps

    directory = ref["official"]
    try:
        maps = open_labelmaps(directory)
    except LabelMapError as error:
        return [Finding(PROBLEM, f"labelmap.official_dir: {error}")]
    findings = [Finding(OK, f"label maps: {maps.num_images} maps in {directory}, top-{maps.topk}, grid "
                            f"{maps.grid[0]}x{maps.grid[1]}, {maps.num_classes}-class ids")]
    if wnids is None:
        return findings
    if imagenet_subset_indices(wnids) is not None:
        findings.append(Finding(OK, f"label maps: ImageNet-1k ids renumbered to the data's {len(wnids)} classes"))
    elif maps.num_classes != len(wnids):
        findings.append(Finding(PROBLEM, f"labelmap.official_dir {directory} holds {maps.num_classes}-class ids, "
                                         f"the data {len(wnids)} classes that are not a subset of ImageNet-1k's: "
                                         "make maps of the data's classes (python -m repro relabel)"))
    train = image_folder(data["root"], "train", wnids)
    missing = [path for path in train.relpaths if path not in maps]
    if missing:
        findings.append(Finding(PROBLEM, f"label maps: {len(missing)} of {len(train)} training images have no map "
                                         f"in {directory}, e.g. {missing[0]}"))
    return findings


def check_pretrained(ref: Mapping, wnids) -> list[Finding]:
    """A pretrained annotator or teacher: its weights are there, and its head fits the data's classes."""
    import torch

    from repro.models import check_hub_weights, classes_of_head

    name = ref["model"]["name"]
    checkpoint = _path(ref.get("checkpoint"))
    class_map = _path(ref.get("class_map"))
    try:
        if checkpoint:
            if not Path(checkpoint).is_file():
                raise FileNotFoundError(f"annotator.checkpoint {checkpoint} not found")
            # memory-mapped: the head's shape without reading a large file
            saved = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
            head = _head_classes(saved)
            where = f"{checkpoint} ({name})"
        elif ref["pretrained"]:
            check_hub_weights(name)
            head, where = 1000, f"timm's {name}"
        else:
            return [Finding(OK, f"annotator: {name} with random weights")]
        if class_map is not None:
            missing = [w for w in wnids or [] if w not in set(classes_of_head(class_map))]
            if missing:
                raise ValueError(f"the data's class {missing[0]} is not in annotator.class_map {class_map}")
        elif wnids is not None and head is not None and head != len(wnids):
            raise ValueError(f"{where} has a {head}-class head but the data have {len(wnids)} classes: set "
                             "annotator.class_map to imagenet-1k or to a file of the head's wnids")
    except (OSError, ValueError, RuntimeError) as error:
        return [Finding(PROBLEM, f"annotator: {error}")]
    return [Finding(OK, f"annotator: {where}, {head}-class head" + (f", class map {class_map}" if class_map else ""))]


def _head_classes(saved) -> int | None:
    """The class count of a saved classifier: the suite's checkpoint records it; a plain state dict's last 2-D
    weight is its head."""
    import torch

    if isinstance(saved, Mapping) and "num_classes" in saved:
        return int(saved["num_classes"])
    state = saved.get("state_dict", saved.get("model", saved)) if isinstance(saved, Mapping) else {}
    weights = [value for key, value in state.items()
               if key.endswith("weight") and torch.is_tensor(value) and value.dim() == 2]
    return int(weights[-1].shape[0]) if weights else None
