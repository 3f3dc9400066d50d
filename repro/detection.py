"""Table 9's detectors, trained and scored by MMDetection itself: its configs (as shipped inside the mmdet package,
`mmdet/.mim/configs`), its Runner and its COCO evaluator (`CocoMetric`). docs/detection.md.

A `detector` run holds the spec of the ImageNet student whose weights initialise the backbone (Table 3's vanilla or
ReLabel ResNet-50), the detector's shipped config, the data (COCO 2017, or the world's detection split), the
schedule, the image scale and the seed. Its compute converts the student's timm ResNet state dict to the keys of
MMDetection's `ResNet` (the same torchvision-style names; only the classifier `fc` is dropped), writes it into
the run as the backbone's `init_cfg` checkpoint (so nothing is downloaded), sizes the backbone and the FPN's
`in_channels` from the model (the embedded ResNets are narrow), and runs MMDetection's training and test loops
with the run's folder as the work dir.

mmcv, mmengine and mmdet are the `detection` extra (`make detection`): they are imported here, inside functions,
so the rest of the suite runs without them.
"""
from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Mapping

# The versions the detector runs are made with (and pinned by the `detection` extra); part of every detector spec.
PACKAGES = {"mmcv": "2.1.0", "mmengine": "0.10.7", "mmdet": "3.3.0"}
INSTALL = ("the detection extra (mmcv 2.1.0 built from source, mmengine 0.10.7, mmdet 3.3.0) is not installed: "
           "run `make detection` (about 11 min once; docs/detection.md)")

# detector -> (its config inside mmdet/.mim/configs, the prefix of its metrics, CocoMetric's metrics -> ours)
DETECTORS = {
    "faster_rcnn_r50_fpn": ("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", "faster_rcnn", {"bbox": "bbox"}),
    "mask_rcnn_r50_fpn": ("mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py", "mask_rcnn", {"bbox": "bbox", "segm": "mask"}),
}
# timm ResNet -> (MMDetection's depth, the block's expansion)
DEPTHS = {"resnet18": (18, 1), "resnet34": (34, 1), "resnet50": (50, 4), "resnet101": (101, 4)}
# timm ResNet kwargs that do not change the layers' names or shapes (stem_width sizes deep stems only: timm's plain
# 7x7 stem, the only one MMDetection's ResNet has a place for, is 64 wide whatever it says)
_NEUTRAL_KWARGS = ("zero_init_last", "drop_rate", "drop_path_rate", "stem_width")
STEM_CHANNELS = 64
# torch.load's weights_only=False is allowed for the mmengine checkpoints the suite wrote itself (a detector run's
# own resume checkpoint), and nowhere else: they are read through this scheme (`_register_own_checkpoints`)
OWN_CHECKPOINT = "repro-run://"
# config keys the suite sets from a detector's spec: `detection.cfg_options` may not change them
SUITE_KEYS = ("model.backbone", "model.neck.in_channels", "train_dataloader", "val_", "test_", "train_cfg",
              "param_scheduler", "optim_wrapper.optimizer.lr", "auto_scale_lr", "randomness", "work_dir", "launcher",
              "load_from", "resume", "default_hooks.checkpoint", "env_cfg")


def missing_packages(on_gpu: bool | None = None) -> str | None:
    """None where the detection extra is installed at the pinned versions, else one line saying what to do.
    `on_gpu`: whether the detectors will train on a GPU (default: whether this machine has one; a Slurm submission
    from a login node says so for its GPU nodes)."""
    found = {}
    for package, wanted in PACKAGES.items():
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return INSTALL
    wrong = [f"{package} {found[package]} (not {wanted})" for package, wanted in PACKAGES.items()
             if found[package] != wanted]
    if wrong:
        return f"the detection extra has {', '.join(wrong)}: run `make detection` to install the pinned versions"
    try:
        import mmcv.ops  # (mmcv-lite, or a wheel built for another torch, has no usable mmcv._ext)
    except (ImportError, OSError) as error:
        return f"mmcv {PACKAGES['mmcv']} has no usable compiled ops ({error}): run `make detection` to build them"
    import torch

    # mmengine trains on the GPU where there is one, and ops built without CUDA fail at the first RoIAlign there
    on_gpu = torch.cuda.is_available() if on_gpu is None else on_gpu
    if on_gpu and mmcv.ops.get_compiling_cuda_version() == "not available":
        return (f"mmcv {PACKAGES['mmcv']}'s ops were built without CUDA and a GPU would run the "
                "detectors: rebuild them with `rm .venv/.detection; make detection` on a GPU node (mmcv builds CUDA "
                "ops where it sees a GPU), or with FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=<the GPUs' arch> where nvcc is "
                "found (docs/detection.md)")
    return None


def require_packages() -> None:
    problem = missing_packages()
    if problem is not None:
        raise DetectionExtraMissing(problem)


class DetectionExtraMissing(RuntimeError):
    """The detection extra is absent or not at the pinned versions; the message says how to install it."""


# --- the spec ----------------------------------------------------------------------------------------------------

def detection_data_spec(cfg: Mapping) -> dict:
    """The COCO-format detection data: the world's detection split, or COCO 2017 under `detection.root`."""
    from repro.pipeline import coco_data_spec

    return coco_data_spec(cfg, "detection")


def detector_spec(cfg: Mapping, detector: str, backbone: Mapping) -> "Spec":
    """A detector trained from the backbone run `backbone` (a train spec's JSON) under `cfg`'s `detection`
    section, scored on the val split."""
    from repro.specs import Spec

    detection = cfg["detection"]
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}: one of {', '.join(DETECTORS)}")
    mmdet_backbone(backbone["spec"]["train"]["model"])  # a backbone MMDetection cannot hold fails now, not later
    schedule = {key: detection[key] for key in ("epochs", "milestones", "batch_size", "lr", "warmup_iters")}
    masks = "segm" in DETECTORS[detector][2]
    options = {key: value for key, value in dict(detection["cfg_options"]).items() if masks or ".mask_" not in key}
    for key in options:
        if key.startswith(SUITE_KEYS) or key.endswith(".num_classes"):
            raise ValueError(f"detection.cfg_options {key!r}: the suite sets it from the spec (data, backbone, FPN "
                             "in_channels, classes, schedule, seed, work dir); change the detection section instead")
    if not all(0 < m <= schedule["epochs"] for m in schedule["milestones"]):
        raise ValueError(f"detection.milestones {schedule['milestones']} must lie in 1..detection.epochs "
                         f"({schedule['epochs']})")
    scale = [int(v) for v in detection["image_scale"]]
    if len(scale) != 2 or min(scale) < 32:
        raise ValueError(f"detection.image_scale {detection['image_scale']} must be [long side, short side], each "
                         "at least 32 (MMDetection's (1333, 800); the paper's (1200, 800))")
    return Spec("detector", {"detector": detector, "config": DETECTORS[detector][0], "packages": dict(PACKAGES),
                             "backbone": dict(backbone), "data": detection_data_spec(cfg), "schedule": schedule,
                             "image_scale": scale, "cfg_options": options, "seed": int(cfg["seed"])})


# --- the backbone: timm's ResNet in MMDetection's ResNet ---------------------------------------------------------

def mmdet_backbone(model: Mapping) -> dict:
    """MMDetection `ResNet` arguments that give the layers of the timm ResNet `model` ({"name", "kwargs"}), and
    the channels of its four stages' outputs (the FPN's in_channels)."""
    name, kwargs = model["name"], dict(model.get("kwargs") or {})
    if name not in DEPTHS:
        raise ValueError(f"detection backbone {name!r}: MMDetection's ResNet holds {', '.join(DEPTHS)} only")
    depth, expansion = DEPTHS[name]
    channels = [int(c) for c in kwargs.pop("channels", (64, 128, 256, 512))]
    other = sorted(set(kwargs) - set(_NEUTRAL_KWARGS))
    if other:
        raise ValueError(f"detection backbone {name} with {', '.join(other)}: MMDetection's ResNet has no such "
                         "layers (only channels carries over)")
    if channels != [channels[0] * 2 ** i for i in range(4)]:
        raise ValueError(f"detection backbone {name} with channels {channels}: MMDetection's ResNet doubles its "
                         "base width per stage")
    return {"depth": depth, "base_channels": channels[0], "stem_channels": STEM_CHANNELS,
            "out_channels": [c * expansion for c in channels]}


def convert_timm_resnet(state_dict: Mapping) -> dict:
    """A timm ResNet's state dict under the keys of MMDetection's `ResNet`: the names are the same
    (conv1/bn1, layerN.i.convK/bnK, layerN.i.downsample.{0,1}); the classifier `fc` is dropped."""
    converted = {key: value for key, value in state_dict.items() if not key.startswith("fc.")}
    unknown = [key for key in converted if not key.startswith(("conv1.", "bn1.", "layer1.", "layer2.", "layer3.",
                                                               "layer4."))]
    if unknown:
        raise ValueError(f"not a plain ResNet state dict: {unknown[0]} has no place in MMDetection's ResNet")
    return converted


def stage_channels(state_dict: Mapping) -> list[int]:
    """The output channels of the four stages of a ResNet state dict (the FPN's in_channels), read from each
    stage's last block's last BatchNorm."""
    out = []
    for stage in range(1, 5):
        norms = sorted((key for key in state_dict if key.startswith(f"layer{stage}.") and key.endswith(".weight")
                        and ".bn" in key), key=lambda key: (int(key.split(".")[1]), key))
        if not norms:
            raise ValueError(f"the backbone's state dict has no layer{stage}")
        out.append(int(state_dict[norms[-1]].shape[0]))
    return out


def write_backbone(model_file: Path, path: Path, backbone_cfg: Mapping) -> list[int]:
    """The student saved at `model_file`, converted, checked to load strictly (every key, every shape) into
    MMDetection's ResNet built from `backbone_cfg`, and saved at `path` for the backbone's `init_cfg`; returns
    its stages' output channels."""
    import torch
    from mmdet.registry import MODELS

    from repro.atomic import write_stream_atomic

    saved = torch.load(model_file, map_location="cpu", weights_only=True)
    converted = convert_timm_resnet(saved["state_dict"])
    MODELS.build({**backbone_cfg, "init_cfg": None}).load_state_dict(converted, strict=True)
    write_stream_atomic(path, lambda file: torch.save({"state_dict": converted, "meta": {"from": str(model_file)}},
                                                      file))
    return stage_channels(converted)


# --- the MMDetection config --------------------------------------------------------------------------------------

def config_path(relative: str) -> Path:
    """A config shipped inside the installed mmdet package (mmdet/.mim/configs)."""
    import mmdet

    path = Path(mmdet.__file__).parent / ".mim" / "configs" / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the installed mmdet lacks its configs; run `make detection`")
    return path


def data_paths(data: Mapping, root: Path) -> dict:
    """split -> (annotation file, image folder) of the detection data under `root`."""
    from repro.data.coco import LAYOUTS

    return {split: (root / annotations, root / images) for split, (annotations, images) in
            LAYOUTS[data["source"]].items()}


def category_names(annotations: Path) -> tuple[str, ...]:
    """The categories of a COCO-format file in id order (MMDetection's `metainfo.classes`)."""
    import json

    categories = json.loads(annotations.read_text())["categories"]
    names = tuple(c["name"] for c in sorted(categories, key=lambda c: c["id"]))
    if len(set(names)) != len(names):
        raise ValueError(f"{annotations}: category names repeat; MMDetection tells categories apart by name")
    return names


def _set_resize(pipeline: list, scale: tuple[int, int]) -> None:
    resizes = [step for step in pipeline if step["type"] == "Resize"]
    if len(resizes) != 1:
        raise RuntimeError(f"expected one Resize in the shipped pipeline, found {len(resizes)}: mmdet changed")
    resizes[0]["scale"] = scale


def detector_config(spec_body: Mapping, work_dir: Path, root: Path, backbone_file: Path, workers: int,
                    world_size: int):
    """The shipped config of the spec's detector, changed only where the spec says: data, classes, backbone
    (its widths and its init checkpoint, so nothing is downloaded), the FPN's in_channels (the backbone's stage
    widths), the schedule, the image scale, the seed."""
    import torch
    from mmengine.config import Config

    cfg = Config.fromfile(str(config_path(spec_body["config"])))
    shipped = cfg.to_dict()
    for key in spec_body["cfg_options"]:
        *parents, leaf = key.split(".")
        node = shipped
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            raise ValueError(f"detection.cfg_options {key!r}: {spec_body['config']} has no such key")
    cfg.merge_from_dict(dict(spec_body["cfg_options"]))
    schedule = spec_body["schedule"]
    if schedule["batch_size"] % world_size:
        raise ValueError(f"detection.batch_size {schedule['batch_size']} does not split over {world_size} "
                         "processes")
    paths = data_paths(spec_body["data"], root)
    classes = category_names(paths["train"][0])
    backbone = mmdet_backbone(backbone_model(spec_body))
    cfg.model.backbone.update(depth=backbone["depth"], base_channels=backbone["base_channels"],
                              stem_channels=backbone["stem_channels"],
                              init_cfg=dict(type="Pretrained", checkpoint=str(backbone_file)))
    cfg.model.neck.in_channels = backbone["out_channels"]
    heads = [cfg.model.roi_head.bbox_head] + ([cfg.model.roi_head.mask_head] if "mask_head" in cfg.model.roi_head
                                              else [])
    for head in heads:
        head.num_classes = len(classes)
    scale = tuple(spec_body["image_scale"])
    loaders = {"train": cfg.train_dataloader, "val": cfg.test_dataloader}
    for split, loader in loaders.items():
        annotations, images = paths[split]
        loader.dataset.update(data_root=str(root), ann_file=str(annotations), data_prefix=dict(img=str(images) + "/"),
                              metainfo=dict(classes=classes))
        _set_resize(loader.dataset.pipeline, scale)
        loader.update(num_workers=workers, persistent_workers=workers > 0)
    cfg.train_dataloader.batch_size = schedule["batch_size"] // world_size
    # on GPUs the ranks' results are gathered over NCCL, not through files in the working directory, which on a
    # multi-node job may be each node's own
    cfg.test_evaluator.update(ann_file=str(paths["val"][0]),
                              collect_device="gpu" if torch.cuda.is_available() else "cpu")
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None  # scored once, after training (`test`)
    cfg.train_cfg.update(max_epochs=schedule["epochs"])
    cfg.train_cfg.pop("val_interval", None)
    cfg.param_scheduler = [
        dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=schedule["warmup_iters"]),
        dict(type="MultiStepLR", begin=0, end=schedule["epochs"], by_epoch=True, milestones=schedule["milestones"],
             gamma=0.1)]
    cfg.optim_wrapper.optimizer.lr = schedule["lr"]
    cfg.auto_scale_lr = dict(enable=False, base_batch_size=schedule["batch_size"])
    # two kept: the hook deletes the oldest before it writes the next and its pointer, and a kill between them left
    # the pointer naming a deleted file
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=1, max_keep_ckpts=2)
    # mmengine trains on through NaN losses: stop at the first, not after 12 epochs and the test
    cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(type="CheckInvalidLossHook", interval=50)]
    cfg.randomness = dict(seed=spec_body["seed"])
    cfg.work_dir = str(work_dir)
    cfg.launcher = "pytorch" if world_size > 1 else "none"
    if not torch.cuda.is_available():
        cfg.env_cfg.dist_cfg = dict(backend="gloo")  # the config's nccl needs GPUs
    return cfg


def backbone_model(spec_body: Mapping) -> Mapping:
    """The timm model spec ({"name", "kwargs"}) of a detector spec's backbone run."""
    return spec_body["backbone"]["spec"]["train"]["model"]


# --- the run -----------------------------------------------------------------------------------------------------

def _register_own_checkpoints(run_dir: Path) -> None:
    """The one place where a checkpoint is read with torch.load(weights_only=False): mmengine's checkpoints hold
    its message hub (HistoryBuffer objects), which torch >= 2.6's default weights_only=True refuses. Only files
    inside this detector run's own folder, which the suite itself wrote, are read so (through the prefix
    OWN_CHECKPOINT); anything else goes through mmengine's loaders and torch's safe default."""
    import torch
    from mmengine.runner import CheckpointLoader

    own = run_dir.resolve()

    def load(filename: str, map_location=None):
        path = Path(filename[len(OWN_CHECKPOINT):]).resolve()
        if not path.is_relative_to(own):
            raise ValueError(f"{path} is not inside the detector run {own}: only the suite's own checkpoints are "
                             "read with weights_only=False")
        return torch.load(path, map_location=map_location, weights_only=False)

    CheckpointLoader.register_scheme(prefixes=OWN_CHECKPOINT, loader=load, force=True)


def latest_checkpoint(work_dir: Path) -> Path | None:
    """The checkpoint mmengine's CheckpointHook last wrote in `work_dir` (its `last_checkpoint` file), if any.
    The file holds an absolute path: where the runs folder is since reached by another path (another mount, a
    copy), the checkpoint of that name in `work_dir` is it; one that is gone is an error, never a silent restart."""
    pointer = work_dir / "last_checkpoint"
    if not pointer.is_file():
        return None
    written = Path(pointer.read_text().strip())
    for path in (work_dir / written.name, written):  # this folder's first: a copy's pointer names the original
        if path.is_file():
            return path
    raise FileNotFoundError(f"{pointer} names the checkpoint {written}, which is not there nor in {work_dir}: "
                            f"put it back to resume, or delete {work_dir} to train the detector from its start")


def coco_metrics(detector: str, metrics: Mapping) -> dict:
    """CocoMetric's results (fractions, `coco/bbox_mAP`, ...) as the table's metrics in % (`faster_rcnn_bbox_ap`,
    `_ap50`, `_ap75`; Mask R-CNN's mask AP from `segm`), every raw value kept beside them. A detector that detects
    nothing on the val split gets no results from CocoMetric (it logs "The testing results of the whole dataset
    is empty"); its AP is 0 (no recall at any threshold), and `empty_detections` says so (the world's small
    detectors; on COCO `train_detector` stops instead)."""
    _, prefix, kinds = DETECTORS[detector]
    empty = not metrics
    out = {}
    for coco, ours in kinds.items():
        for suffix, name in (("mAP", "ap"), ("mAP_50", "ap50"), ("mAP_75", "ap75")):
            out[f"{prefix}_{ours}_{name}"] = 0.0 if empty else 100.0 * float(metrics[f"coco/{coco}_{suffix}"])
    return {**out, "empty_detections": empty, "coco_metric": {key: float(value) for key, value in metrics.items()}}


def train_detector(spec, run, resources) -> dict:
    """A detector run: the backbone converted into the run, MMDetection's training loop over the shipped config
    with the spec's changes (resumed from the run's last epoch checkpoint after a kill), then its test loop on the
    val split scored by CocoMetric."""
    import time

    require_packages()
    from mmengine.runner import Runner

    from repro.models import MODEL_FILE
    from repro.runs import cached
    from repro.specs import Spec
    from repro.steps import data_root

    body = spec.body
    backbone_run = cached(Spec.from_json(body["backbone"]), resources)  # trained first if needed
    root = data_root(body["data"], resources).resolve()  # MMDetection joins a relative path to its own roots
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:  # the suite's process group (gloo on CPU) is the one MMDetection's launcher then finds
        from repro.train.distributed import init_distributed

        init_distributed()
    backbone_file = run.dir / "backbone.pth"
    work_dir = run.dir.resolve() / "work"
    cfg = detector_config(body, work_dir, root, backbone_file, resources.workers, world_size)
    in_channels = write_backbone(backbone_run.dir / MODEL_FILE, backbone_file, cfg.model.backbone.to_dict())
    if in_channels != list(cfg.model.neck.in_channels):
        raise RuntimeError(f"the backbone's stages give {in_channels} channels, its model spec "
                           f"{list(cfg.model.neck.in_channels)}")
    _register_own_checkpoints(run.dir)
    resume = latest_checkpoint(work_dir)
    if resume is not None:
        cfg.load_from, cfg.resume = OWN_CHECKPOINT + str(resume), True
        run.log(f"resuming from {resume.name}")
    runner = Runner.from_cfg(cfg)
    started = time.time()
    try:
        runner.train()
    except AssertionError as error:  # CheckInvalidLossHook's assertion carries no message
        raise ValueError(f"detector run {run.hash}: training stopped by a failed check, a non-finite loss where "
                         f"mmdet's CheckInvalidLossHook made it ({error!r}; the log in {work_dir} says which); the "
                         "run is left unfinished and resumes from its last epoch checkpoint") from None
    trained = time.time()
    metrics = runner.test()
    if not metrics and body["data"]["source"] != "world":
        # on COCO a detector that finds nothing has diverged (mmengine trains on through NaN losses): an AP of 0
        # cached as this run's would decide Table 9's claims
        raise ValueError(f"detector run {run.hash}: no detection on COCO's val split, so its training diverged or "
                         f"failed (see the log in {work_dir}); the run is left unfinished: delete {work_dir} to "
                         "train it again")
    return {**coco_metrics(body["detector"], metrics), "train_seconds": round(trained - started, 1),
            "test_seconds": round(time.time() - trained, 1), "in_channels": in_channels}
