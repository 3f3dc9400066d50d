"""The pre-flight check: everything a run reads from outside the cache, looked at in seconds before any training
step (`python -m repro check`, and every experiment before it computes).

It follows the specs, not the config: the data folders, the released label maps and the pretrained annotators
or teachers that the runs to compute actually name. Each finding is one line; a problem names the path or key and
what to do.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from repro.plan import released_maps, with_inputs
from repro.specs import Spec, canonical_json, digest_path, is_spec_json

OK, ABSENT, PROBLEM = "ok", "absent", "problem"


@dataclass(frozen=True)
class Finding:
    level: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


def preflight(specs: Iterable[Spec], processes: int | None = None, runs_root: str | os.PathLike | None = None
              ) -> list[Finding]:
    """Findings for the inputs of `specs` and of every run they need, each input looked at once; the global
    batches are checked to split over `processes` (default: this job's, torchrun's WORLD_SIZE); with `runs_root`,
    the cached runs they read that cannot serve them."""
    ordered = with_inputs(specs)
    findings: list[Finding] = []
    layouts = {}  # data root -> (wnids, training image paths), for the data that were read
    for data in _unique(spec.body["data"] for spec in ordered if isinstance(spec.body.get("data"), Mapping)):
        found, layout = check_data(data)
        findings += found
        if layout is not None:
            layouts[data["root"]] = layout
    released, pretrained = {}, {}
    for spec in ordered:
        data = spec.body.get("data")
        root = data["root"] if isinstance(data, Mapping) else None
        for ref in released_maps(spec.body):
            released.setdefault(canonical_json([ref, root]), (ref, root))
        for ref in _pretrained_refs(spec.body):
            pretrained.setdefault(canonical_json([ref, root]), (ref, root))
    released_grids = {}  # official_dir -> grid, of the released maps that could be opened
    for ref, root in released.values():
        found, grid = check_released_maps(ref, layouts.get(root))
        findings += found
        if grid is not None:
            released_grids[ref["official"]] = grid
    for ref, root in pretrained.values():
        findings += check_pretrained(ref, layouts[root][0] if root in layouts else None)
    findings += check_evaluation_folders((spec for spec in ordered if spec.kind == "eval"), layouts)
    findings += check_extra_pools(ordered, layouts)
    if runs_root is not None:
        findings += check_world_renditions((spec for spec in ordered if spec.kind == "eval"), Path(runs_root))
    findings += check_pool_grids(ordered, released_grids)
    findings += check_unmeasured_choices(ordered)
    findings += check_batch_splits(ordered, processes or int(os.environ.get("WORLD_SIZE", "1")))
    if any(spec.kind == "detector" for spec in ordered):
        findings += check_detection_packages()
    return list(dict.fromkeys(findings))


def check_cluster_jobs(specs: Iterable[Spec], processes: int, gpus: bool) -> list[Finding]:
    """What a Slurm submission's jobs would meet only on their nodes, checked on the login node: each training job's
    batches split over its `processes` tasks (WORLD_SIZE here is 1), and with `gpus` the detectors' mmcv ops have
    CUDA (this node may have no GPU to tell)."""
    specs = list(specs)
    findings = check_batch_splits(specs, processes)
    if any(spec.kind == "detector" for spec in specs):
        findings += [finding for finding in check_detection_packages(on_gpu=gpus) if finding.level == PROBLEM]
    return findings


def check_batch_splits(specs: Iterable[Spec], world_size: int) -> list[Finding]:
    """Every global batch the runs train with splits over the job's processes (and accumulation steps): a batch
    that does not failed only when its run started, after every run before it (label maps of many hours)."""
    from repro.train.trainer import batch_split

    if world_size <= 1:
        return []
    findings = {}
    for spec in specs:
        if spec.kind in ("train", "annotator") and isinstance(spec.body.get("train"), Mapping):
            batch, accum = spec.body["train"]["batch_size"], spec.body["train"].get("accum_steps", 1)
            try:
                batch_split(batch, world_size, accum)
            except ValueError as error:
                findings.setdefault((batch, accum), Finding(
                    PROBLEM, f"{spec.kind} run {spec.hash[:16]} (and any of its batch): {error}: run on a process "
                             f"count that divides it, or change its batch_size (--set)"))
        elif spec.kind == "detector" and spec.body["schedule"]["batch_size"] % world_size:
            findings.setdefault(("detection", spec.body["schedule"]["batch_size"]), Finding(
                PROBLEM, f"detection.batch_size {spec.body['schedule']['batch_size']} does not split over "
                         f"{world_size} processes: run on a process count that divides it, or set it"))
    return list(findings.values())


def check_detection_packages(on_gpu: bool | None = None) -> list[Finding]:
    """Table 9's detectors need the detection extra (mmcv with its compiled ops, mmengine, mmdet) at its pins;
    `on_gpu` as `repro.detection.missing_packages` reads it."""
    from repro.detection import PACKAGES, missing_packages

    problem = missing_packages(on_gpu)
    if problem is not None:
        return [Finding(PROBLEM, problem)]
    return [Finding(OK, "detection extra: " + ", ".join(f"{name} {version}" for name, version in PACKAGES.items()))]


def check_evaluation_folders(evaluations: Iterable[Spec], layouts: Mapping) -> list[Finding]:
    """The released sets that evaluators read from a folder (Table 7's at paper scale): every folder the evaluator
    reads present and its class folders scorable by the model's classes (`layouts`: data root -> (wnids, ...)),
    or a problem found before any training, not after it."""
    from repro.evaluate.robustness import SET_VARIANTS, classes_folder, missing_variants
    from repro.evaluate.set_classes import set_classes

    findings, counted = [], set()
    for spec in evaluations:
        evaluator = spec.body["evaluator"]
        source = evaluator.get("source")
        if not isinstance(source, str):
            continue
        kind = evaluator["type"]
        missing = missing_variants(kind, Path(source))
        if not Path(source).is_dir():
            findings.append(Finding(PROBLEM, f"{kind}: no folder {source}: put the released set there or set "
                                             f"robustness.{kind}_root"))
            continue
        if missing:
            findings.append(Finding(PROBLEM, f"{kind}: no folder {missing[0]} ({len(missing)} of the "
                                             f"{len(SET_VARIANTS[kind])} folders the release holds are missing: "
                                             f"all of them are read)"))
            continue
        layout = layouts.get(spec.body["data"]["root"])
        try:
            if layout is not None:
                set_classes(classes_folder(kind, Path(source)), layout[0])
        except (OSError, ValueError) as error:
            findings.append(Finding(PROBLEM, f"{kind}: {error}"))
            continue
        findings.append(Finding(OK, f"{kind}: {source}"))
        if (kind, source) not in counted:  # several evaluations (a student each) read one set: walked once
            counted.add((kind, source))
            findings += _released_count(kind, source)
    return findings


def check_world_renditions(evaluations: Iterable[Spec], runs_root: Path) -> list[Finding]:
    """A cached world without the rendition set that a rendition evaluation reads, built before the font it needs
    was installed: found before any run, not when Table 7 reaches it after the tables before it."""
    from repro.evaluate.robustness import world_rendition_problem

    worlds = {Spec.from_json(spec.body["data"]["world"]) for spec in evaluations
              if spec.body["evaluator"]["type"] == "rendition" and spec.body["evaluator"].get("source") is None
              and is_spec_json(spec.body["data"].get("world"))}
    problems = (world_rendition_problem(runs_root / world.kind / world.hash) for world in worlds)
    return [Finding(PROBLEM, problem) for problem in problems if problem]


def _released_count(kind: str, source: str) -> tuple[Finding, ...]:
    """A released set read whole (`RELEASED_IMAGES`) that holds fewer images than its release: a part-unpacked
    archive, which would be scored on what it holds."""
    from repro.evaluate.robustness import RELEASED_IMAGES, classes_folder
    from repro.imagefiles import is_image

    released, folder = RELEASED_IMAGES.get(kind), classes_folder(kind, Path(source))
    if released is None:
        return ()
    held = sum(1 for _, _, files in os.walk(folder, followlinks=True) for name in files if is_image(name))
    if held >= released:
        return ()
    return (Finding(ABSENT, f"{kind}: {released - held:,} of the release's {released:,} images are not under "
                            f"{folder} ({held:,} are): a part-unpacked archive is scored on what it holds; unpack "
                            "it again"),)


def check_extra_pools(specs: list[Spec], layouts: Mapping) -> list[Finding]:
    """Table 5's extra pool (<data root>/<extra_data.split>): there and holding images, and extra_data.images at
    least one per class; else the pool was first read after every table before it had trained."""
    from repro.imagefiles import walk_images
    from repro.steps import extra_images_per_class

    findings = []  # each found once for every spec that names it: `preflight` keeps one
    for spec in specs:
        data = spec.body.get("data")
        if spec.kind == "labelmaps" and spec.body.get("unlabelled") and data.get("source") != "world":
            pool = Path(data["root"]) / spec.body["split"]
            images = walk_images(data["root"], spec.body["split"]) if pool.is_dir() else iter(())
            if next(images, None) is None:  # the first image found is enough: a pool may hold millions
                findings.append(Finding(PROBLEM, f"extra_data: no images under {pool}, Table 5's extra pool: put "
                                                 "its images there (any folder layout) or set extra_data.split to "
                                                 "the folder under data.root that holds them"))
        elif spec.kind == "train" and spec.body.get("extra_data") and data["root"] in layouts:
            try:
                extra_images_per_class(spec.body["extra_data"]["images"], len(layouts[data["root"]][0]))
            except ValueError as error:
                findings.append(Finding(PROBLEM, str(error)))
    return findings


def check_unmeasured_choices(specs: list[Spec]) -> list[Finding]:
    """Two paper-scale choices the suite cannot make for the user, named before anything trains: label cleaning
    without supervision.clean_list keeps the images whose maps agree with their label (not Beyer et al.'s list),
    and released maps are read in the orientation labelmap.transpose says, which only `check-labelmaps` measures."""
    findings = []
    for spec in specs:
        if spec.kind != "train" or (spec.body.get("data") or {}).get("source") == "world":
            continue
        if spec.body["objective"]["mode"] == "label_cleaning" and not spec.body["objective"].get("clean_list"):
            findings.append(Finding(ABSENT, "supervision.clean_list is not set: label cleaning keeps the training "
                                            "images whose label maps' top-1 agrees with their label; set it to a "
                                            "list of kept images (Beyer et al.'s) to train on that instead"))
        maps = spec.body.get("labelmaps")
        for ref in released_maps(maps):
            read_as = "[k, W, H] (labelmap.transpose=true)" if "transposed" in maps else "stored, [k, H, W]"
            findings.append(Finding(ABSENT, f"a measured orientation of {ref['official']}: read as {read_as}; "
                                            "`python -m repro check-labelmaps --maps DIR --boxes "
                                            "LOC_train_solution.csv --images ROOT` says which the files hold "
                                            "(docs/paper-scale.md)"))
    return findings


def check_pool_grids(specs: list[Spec], released_grids: Mapping) -> list[Finding]:
    """Table 5's pool maps against the training images' (the released ones at paper scale): one student reads both,
    so their grids must agree; else the student failed only after the annotator's pass over the whole pool."""
    findings, grids = [], {}  # each seed's student names the same maps: each grid found once
    for spec in specs:
        extra = spec.body.get("extra_data") if spec.kind == "train" else None
        if not extra:
            continue
        refs = (spec.body["labelmaps"], extra["labelmaps"])
        for ref in refs:
            grids.setdefault(canonical_json(ref), _maps_grid(ref, released_grids))
        train, pool = (grids[canonical_json(ref)] for ref in refs)
        if train[0] is not None and pool[0] is not None and train[0] != pool[0]:
            findings.append(Finding(PROBLEM, f"extra_data: the pool's label maps would be {pool[0][0]}x{pool[0][1]} "
                                             f"({pool[1]}) beside the training images' {train[0][0]}x{train[0][1]} "
                                             f"({train[1]}): set labelmap.input_size and labelmap.output_stride so "
                                             "that the annotator's grid is the training maps' (the paper: "
                                             "EfficientNet-L2 at 475 and 32, 15x15)"))
    return findings


def _maps_grid(ref: Mapping, released_grids: Mapping) -> tuple[tuple[int, int] | None, str]:
    """(H, W) of the label maps `ref` names as a student reads them, and where that grid comes from; None where it
    is not known before they exist (released maps that could not be opened, a model meta tensors cannot run)."""
    from repro.steps import generated_grid

    if "transposed" in ref:
        grid, origin = _maps_grid(ref["transposed"], released_grids)
        return (grid[::-1] if grid else None), f"{origin}, labelmap.transpose"
    if "official" in ref:
        return released_grids.get(ref["official"]), f"labelmap.official_dir {ref['official']}"
    body = Spec.from_json(ref).body
    if "source" in body:  # a variant: fewer classes or bits per cell, the same grid
        return _maps_grid(body["source"], released_grids)
    if "oracle" in body:
        return (int(body["grid"]), int(body["grid"])), "multilabel.grid"
    origin = f"the annotator at labelmap.input_size {body['input_size']}, output_stride {body['output_stride']}"
    try:
        return generated_grid(body), origin
    except Exception:  # any model meta tensors cannot run, or no feature map: the pass itself names the problem
        return None, origin


def _unique(items: Iterable[Mapping]) -> list[Mapping]:
    return list({canonical_json(item): item for item in items}.values())


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

def check_transfer(data: Mapping) -> list[Finding]:
    """A transfer task's dataset (Table 8): read as a fine-tune would read it."""
    from repro.data.transfer import open_transfer

    if data["source"] == "world":
        return [Finding(OK, f"transfer task {data['task']}: the world's downstream/{data['task']}")]
    try:
        opened = open_transfer(data, Path(data["root"]))
    except (FileNotFoundError, ValueError) as error:
        return [Finding(PROBLEM, str(error))]
    return [Finding(OK, f"transfer task {data['task']}: {opened.num_classes} classes, {len(opened.train)} training "
                        f"images under {data['root']}")]


def check_multilabel(data: Mapping) -> list[Finding]:
    """Table 10's and Table 9's COCO-format data: both splits read as a multi-label fine-tune reads them."""
    from repro.data.coco import open_multilabel

    what, key = ("detection", "detection.root") if data.get("detection") else ("multi-label", "multilabel.root")
    if data["source"] == "world":
        return [Finding(OK, f"{what} data: the world's detection split")]
    try:
        opened = open_multilabel(data, Path(data["root"]))
    except (FileNotFoundError, ValueError) as error:
        return [Finding(PROBLEM, f"{error} ({key})")]
    return [Finding(OK, f"{what} data: {opened.num_classes} categories, {len(opened.train)} training and "
                        f"{len(opened.eval_sets[0].images)} val images under {data['root']}")]


def check_data(data: Mapping) -> tuple[list[Finding], tuple[list[str], tuple[str, ...]] | None]:
    """The layout of an ImageNet installation: classes, train, val (either layout), ReaL, ImageNetV2; and, where
    it could be read, (its wnids, its training images' paths)."""
    from repro.data.folders import VAL_SOLUTION, image_folder, read_classes, val_folder

    if data.get("task"):
        return check_transfer(data), None
    if data.get("multilabel") or data.get("detection"):
        return check_multilabel(data), None
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
            labels = digest_path(data.get("val_labels"))
            val = val_folder(root, wnids, labels)
            flat = bool(val.relpaths) and val.relpaths[0].count("/") == 1
            layout = f"flat, labelled by {labels or root / VAL_SOLUTION}" if flat else "class folders"
            findings.append(Finding(OK if len(val) else PROBLEM, f"val: {len(val)} images ({layout})"))
        except (OSError, ValueError) as error:
            findings.append(Finding(PROBLEM, f"val: {error}"))
    if val is not None and len(val):
        findings += _check_label_sets(data, root, val, wnids)
    findings += _check_v2(data, root, wnids)
    return findings, (wnids, train.relpaths)


def _check_v2(data: Mapping, root: Path, wnids) -> list[Finding]:
    """Each ImageNetV2 folder present and numbered within the classes (`integer_folder`), or absent."""
    from repro.data.folders import integer_folder
    from repro.data.imagenet import IMAGENET_V2, imagenet_subset_indices, imagenet_v2_root

    findings = []
    try:
        v2_root = imagenet_v2_root(data, root)
    except FileNotFoundError as error:
        return [Finding(PROBLEM, str(error))]
    folder_classes = imagenet_subset_indices(wnids) if data.get("source") == "imagenet" else None
    for name, folder in IMAGENET_V2.items():
        if not (v2_root / folder).is_dir():
            findings.append(Finding(ABSENT, f"{name}: {v2_root / folder} not found (its columns stay empty, Table "
                                            "A1's among them; put the folder there or set data.v2_root)"))
            continue
        try:
            images = integer_folder(v2_root / folder, len(wnids), folder_classes)
            findings.append(Finding(OK, f"{name}: {len(images)} images in {v2_root / folder}"))
        except (OSError, ValueError) as error:
            findings.append(Finding(PROBLEM, f"{name}: {error}"))
    return findings


def _check_label_sets(data: Mapping, root: Path, val, wnids) -> list[Finding]:
    import json

    from repro.data.imagenet import imagenet_label_sets
    from repro.data.labelsets import read_label_sets, timm_real_json

    findings = []
    for key, default in (("real_json", root / "real.json"), ("shankar_json", root / "shankar.json")):
        path = digest_path(data.get(key))
        path = Path(path) if path else default if default.exists() else None
        name = key.removesuffix("_json")
        if path is None:
            if key == "real_json" and data["source"] == "imagenet":
                try:
                    sets = imagenet_label_sets(val, wnids)
                except ValueError as error:  # val files not named as ImageNet's: ReaL's order cannot be matched
                    findings.append(Finding(PROBLEM, f"real: {error} (ImageNet's val file names, or set "
                                                     "data.real_json to label sets for these files)"))
                    continue
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

def check_released_maps(ref: Mapping, layout: tuple[list[str], tuple[str, ...]] | None
                        ) -> tuple[list[Finding], tuple[int, int] | None]:
    """The released maps' class ids against the data's classes (`layout`: wnids, training images) and their
    coverage of the training images; and their grid (None where they cannot be opened)."""
    from repro.data.imagenet import released_maps_classes
    from repro.labelmaps import LabelMapError, open_labelmaps

    directory = ref["official"]
    try:
        maps = open_labelmaps(directory)
    except LabelMapError as error:
        return [Finding(PROBLEM, f"labelmap.official_dir: {error}")], None
    findings = [Finding(OK, f"label maps: {maps.num_images} maps in {directory}, top-{maps.topk}, grid "
                            f"{maps.grid[0]}x{maps.grid[1]}, {maps.num_classes}-class ids")]
    if layout is None:
        return findings, maps.grid
    wnids, train = layout
    try:
        if released_maps_classes(wnids, maps.num_classes, f"labelmap.official_dir {directory}") is not None:
            findings.append(Finding(OK, f"label maps: ImageNet-1k ids renumbered to the data's {len(wnids)} "
                                        "classes"))
    except ValueError as error:
        findings.append(Finding(PROBLEM, str(error)))
    missing = [path for path in train if path not in maps]
    if missing:
        findings.append(Finding(PROBLEM, f"label maps: {len(missing)} of {len(train)} training images have no map "
                                         f"in {directory}, e.g. {missing[0]}"))
    return findings, maps.grid


def check_pretrained(ref: Mapping, wnids) -> list[Finding]:
    """A pretrained annotator or teacher: its weights are there, and its head fits the data's classes."""
    import torch

    from repro.models import check_hub_weights, head_rows

    name = ref["model"]["name"]
    checkpoint = digest_path(ref.get("checkpoint"))
    class_map = digest_path(ref.get("class_map"))
    try:
        if checkpoint:
            if not Path(checkpoint).is_file():
                raise FileNotFoundError(f"annotator.checkpoint {checkpoint} not found")
            head = _head_classes(_load_mapped(Path(checkpoint)), Path(checkpoint), ref["model"])
            where = f"{checkpoint} ({name})"
        elif ref["pretrained"]:
            check_hub_weights(name)
            head, where = 1000, f"timm's {name}"
        else:
            return [Finding(OK, f"annotator: {name} with random weights")]
        if wnids is not None and head is not None:
            head_rows(head, wnids, class_map, where)
    except (OSError, ValueError, RuntimeError) as error:
        return [Finding(PROBLEM, f"annotator: {error}")]
    return [Finding(OK, f"annotator: {where}, {head}-class head" + (f", class map {class_map}" if class_map else ""))]


def _load_mapped(path: Path):
    """A checkpoint memory-mapped (every parameter's name and shape without reading a large file), or read whole
    where it was saved in torch's legacy format, which the run itself reads."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "_use_new_zipfile_serialization" not in str(error):
            raise
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # neither format (an empty file, text, ...): torch raises as many kinds
        first = (str(error).splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{path} cannot be read as a torch checkpoint ({first})") from None


def _head_classes(saved, path: Path, spec: Mapping) -> int:
    """The class count of a saved classifier, checked to load into its architecture `spec` (a suite checkpoint
    records both; a plain state dict is loaded, as the run will, into the architecture built on the meta device)."""
    import torch

    from repro.models import create_model, load_fitting, timm_state

    if isinstance(saved, Mapping) and "num_classes" in saved:
        return int(saved["num_classes"])
    state, head = timm_state(saved, path, spec)
    with torch.device("meta"):
        model = create_model(spec, num_classes=head)
    load_fitting(model, state, path, spec)
    return head
