"""Table 9 in MMDetection: the detector runs' specs, timm's ResNet in MMDetection's `ResNet` (key by key and by
output), the suite without the detection extra, and (slow) both detectors trained and scored on the smoke world.

The tests that build MMDetection's models need the detection extra (`make detection`): they are marked slow, which
`make test-slow` (and CI) installs it for, and skip, saying so, where it is absent.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from repro.config import profile_config, with_changes
from repro.detection import (DETECTORS, OWN_CHECKPOINT, PACKAGES, convert_timm_resnet, detector_spec,
                             missing_packages, mmdet_backbone, stage_channels)
from repro.experiment import Context, discover
from repro.pipeline import student_spec
from repro.specs import Spec

REPO = Path(__file__).resolve().parents[1]
NARROW = profile_config("smoke")["models"]["resnet50"]
EXTRA_MISSING = missing_packages()
needs_mmdet = pytest.mark.skipif(EXTRA_MISSING is not None, reason=f"needs the detection extra: {EXTRA_MISSING}")


def _timm(model, **kwargs):
    return timm.create_model(model["name"], num_classes=10, **(model.get("kwargs") or {}), **kwargs).eval()


@needs_mmdet
def test_ops_built_without_cuda_are_refused_where_a_gpu_would_run_the_detectors(monkeypatch):
    import mmcv.ops

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(mmcv.ops, "get_compiling_cuda_version", lambda: "not available")
    assert "ops were built without CUDA" in missing_packages()
    monkeypatch.setattr(mmcv.ops, "get_compiling_cuda_version", lambda: "12.8")
    assert missing_packages() is None


@needs_mmdet
def test_a_slurm_submission_from_a_node_without_a_gpu_checks_the_ops_for_its_gpu_jobs(monkeypatch):
    import mmcv.ops

    from repro.preflight import check_cluster_jobs
    from repro.specs import Spec

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the login node
    monkeypatch.setattr(mmcv.ops, "get_compiling_cuda_version", lambda: "not available")
    assert missing_packages() is None  # the detectors would train here, on this CPU
    detector = Spec("detector", {"schedule": {"batch_size": 16}})
    problems = check_cluster_jobs([detector], processes=8, gpus=True)
    assert len(problems) == 1 and "ops were built without CUDA" in problems[0].message
    assert check_cluster_jobs([detector], processes=8, gpus=False) == []
    assert "does not split over 6 processes" in check_cluster_jobs([detector], processes=6, gpus=False)[0].message


# --- the specs ---------------------------------------------------------------------------------------------------

def test_each_detector_starts_from_table3s_vanilla_and_relabel_runs():
    ctx = Context("proxy", profile_config("proxy"), [0, 1], "unused", "unused")
    table3 = {spec.hash for spec in discover()["table3"].plan(ctx)}
    specs = discover()["table9"].plan(ctx)
    backbones = [Spec.from_json(spec["backbone"]) for spec in specs]
    assert len(specs) == len(DETECTORS) * 2 * 2 and len({spec.hash for spec in specs}) == len(specs)
    assert {backbone.hash for backbone in backbones} <= table3 and len({b.hash for b in backbones}) == 4
    assert {backbone["objective"]["mode"] for backbone in backbones} == {"original", "relabel"}
    assert all(spec["packages"] == PACKAGES and spec["seed"] == backbone["seed"]
               for spec, backbone in zip(specs, backbones))


def test_every_detection_option_reaches_the_detector_spec_and_no_student():
    cfg = profile_config("proxy")
    backbone = student_spec(cfg).as_json()
    base = detector_spec(cfg, "mask_rcnn_r50_fpn", backbone).hash
    changes = {"image_scale": [224, 160], "epochs": 5, "milestones": [], "batch_size": 4, "lr": 0.02,
               "warmup_iters": 7, "cfg_options": {"model.roi_head.bbox_head.fc_out_channels": 128}}
    # COCO's root is read at paper scale only (below); `detectors` says which runs, not what one run is
    assert set(changes) == set(cfg["detection"]) - {"root", "detectors"}
    for key, value in changes.items():
        changed = with_changes(cfg, {f"detection.{key}": value})
        assert detector_spec(changed, "mask_rcnn_r50_fpn", backbone).hash != base, key
        assert student_spec(changed).hash == student_spec(cfg).hash, key
    assert detector_spec(cfg, "faster_rcnn_r50_fpn", backbone).hash != base
    # a mask head's options reach Mask R-CNN only
    faster = detector_spec(cfg, "faster_rcnn_r50_fpn", backbone)
    assert not any(".mask_" in key for key in faster["cfg_options"]) and faster["cfg_options"]
    masked = with_changes(cfg, {"detection.cfg_options": {**cfg["detection"]["cfg_options"],
                                                          "model.roi_head.mask_head.num_convs": 2}})
    assert detector_spec(masked, "faster_rcnn_r50_fpn", backbone) == faster
    paper = profile_config("paper")
    spec = detector_spec(paper, "faster_rcnn_r50_fpn", student_spec(paper).as_json())
    assert spec["data"] == {"source": "coco", "world": None, "root": str(Path.cwd() / "data" / "coco"),
                            "detection": True}
    assert detector_spec(with_changes(paper, {"detection.root": "/elsewhere"}), "faster_rcnn_r50_fpn",
                         student_spec(paper).as_json()).hash != spec.hash


def test_a_bad_detection_option_is_one_line_naming_the_key():
    cfg = profile_config("smoke")
    backbone = student_spec(cfg).as_json()
    with pytest.raises(ValueError, match="unknown detector 'retinanet'"):
        detector_spec(cfg, "retinanet", backbone)
    with pytest.raises(ValueError, match=r"detection.milestones \[5\] must lie in 1..detection.epochs \(1\)"):
        detector_spec(with_changes(cfg, {"detection.milestones": [5]}), "faster_rcnn_r50_fpn", backbone)
    with pytest.raises(ValueError, match="detection.image_scale"):
        detector_spec(with_changes(cfg, {"detection.image_scale": [800]}), "faster_rcnn_r50_fpn", backbone)
    with pytest.raises(ValueError, match="'model.neck.in_channels': the suite sets it from the spec"):
        detector_spec(with_changes(cfg, {"detection.cfg_options": {"model.neck.in_channels": [1, 2, 3, 4]}}),
                      "faster_rcnn_r50_fpn", backbone)
    rexnet = student_spec(with_changes(cfg, {"train.model": cfg["models"]["rexnet_100"]})).as_json()
    with pytest.raises(ValueError, match="detection backbone 'rexnet_100'"):
        detector_spec(cfg, "faster_rcnn_r50_fpn", rexnet)


# --- the backbone ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", [NARROW, {"name": "resnet50", "kwargs": {}}], ids=["narrow", "resnet50"])
def test_the_fpns_in_channels_are_the_models_stage_widths(model):
    expected = mmdet_backbone(model)["out_channels"]
    assert stage_channels(_timm(model).state_dict()) == expected
    features = _timm(model, features_only=True, out_indices=(1, 2, 3, 4))
    assert features.feature_info.channels() == expected


def test_the_conversion_drops_the_classifier_and_refuses_other_layers():
    state = _timm(NARROW).state_dict()
    converted = convert_timm_resnet(state)
    assert set(state) - set(converted) == {"fc.weight", "fc.bias"}
    assert all(converted[key] is state[key] for key in converted)
    with pytest.raises(ValueError, match="head.weight has no place in MMDetection's ResNet"):
        convert_timm_resnet({**state, "head.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="MMDetection's ResNet has no such layers"):
        mmdet_backbone({"name": "resnet50", "kwargs": {"stem_type": "deep"}})
    with pytest.raises(ValueError, match="doubles its base width per stage"):
        mmdet_backbone({"name": "resnet50", "kwargs": {"channels": [16, 32, 48, 128]}})


@pytest.mark.parametrize("model", [NARROW, {"name": "resnet50", "kwargs": {}}], ids=["narrow", "resnet50"])
@pytest.mark.slow
@needs_mmdet
def test_the_converted_backbone_is_timms_key_by_key_and_by_output(model):
    from mmdet.models.backbones import ResNet

    args = mmdet_backbone(model)
    mmdet = ResNet(depth=args["depth"], base_channels=args["base_channels"], stem_channels=args["stem_channels"],
                   out_indices=(0, 1, 2, 3), style="pytorch")
    mmdet.eval()  # (its train() returns None)
    source = _timm(model)
    for module in source.modules():  # statistics that are not the initial ones, so the BatchNorms are compared
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    converted = convert_timm_resnet(source.state_dict())
    target = mmdet.state_dict()
    assert sorted(converted) == sorted(target)  # key by key
    assert all(converted[key].shape == target[key].shape for key in target)
    mmdet.load_state_dict(converted, strict=True)
    features = _timm(model, features_only=True, out_indices=(1, 2, 3, 4))
    features.load_state_dict(converted, strict=True)
    image = torch.rand(1, 3, 112, 96)
    with torch.no_grad():
        for theirs, ours in zip(features(image), mmdet(image), strict=True):
            assert ours.shape == theirs.shape
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@needs_mmdet
def test_only_the_runs_own_checkpoints_are_read_without_weights_only(tmp_path):
    from mmengine.runner import CheckpointLoader

    from repro.detection import _register_own_checkpoints

    run = tmp_path / "run"
    run.mkdir()
    _register_own_checkpoints(run)
    from mmengine.logging import HistoryBuffer

    torch.save({"message_hub": {"loss": HistoryBuffer([1.0], [1])}}, run / "epoch_1.pth")  # as mmengine's hold
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(run / "epoch_1.pth")  # torch's default, which every other load keeps
    loaded = CheckpointLoader.load_checkpoint(OWN_CHECKPOINT + str(run / "epoch_1.pth"))
    assert loaded["message_hub"]["loss"].current() == 1.0
    torch.save({"x": 1}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="is not inside the detector run"):
        CheckpointLoader.load_checkpoint(OWN_CHECKPOINT + str(run / ".." / "other.pth"))


def test_a_detector_resumes_from_its_checkpoint_after_the_runs_folder_moved(tmp_path):
    """mmengine's last_checkpoint holds an absolute path: a runs folder reached by another path kept its
    checkpoint but trained the detector again from its start, without a word."""
    from repro.detection import latest_checkpoint

    work = tmp_path / "now" / "work"
    work.mkdir(parents=True)
    assert latest_checkpoint(work) is None
    (work / "epoch_3.pth").write_bytes(b"")
    (work / "last_checkpoint").write_text(str(work / "epoch_3.pth"))
    assert latest_checkpoint(work) == work / "epoch_3.pth"
    (work / "last_checkpoint").write_text(str(tmp_path / "then" / "work" / "epoch_3.pth"))  # written before a move
    assert latest_checkpoint(work) == work / "epoch_3.pth"
    (tmp_path / "then" / "work").mkdir(parents=True)  # a copy: the original is still there, and outside the run
    (tmp_path / "then" / "work" / "epoch_3.pth").write_bytes(b"")
    assert latest_checkpoint(work) == work / "epoch_3.pth"
    (tmp_path / "then" / "work" / "epoch_3.pth").unlink()
    (work / "epoch_3.pth").unlink()
    with pytest.raises(FileNotFoundError, match="delete .*work to train the detector from its start"):
        latest_checkpoint(work)


# --- without the extra -------------------------------------------------------------------------------------------

# Run in a fresh interpreter in which mmcv, mmengine and mmdet cannot be imported nor found installed.
_WITHOUT_EXTRA = """
import importlib.abc, importlib.metadata, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("mmcv", "mmengine", "mmdet"):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Absent())
version = importlib.metadata.version
def absent(name):
    if name in ("mmcv", "mmengine", "mmdet"):
        raise importlib.metadata.PackageNotFoundError(name)
    return version(name)
importlib.metadata.version = absent
from repro.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _without_extra(*args, tmp_path):
    return subprocess.run([sys.executable, "-c", _WITHOUT_EXTRA, *args, "--runs", str(tmp_path / "runs"),
                           "--results", str(tmp_path / "results")],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_without_the_extra_table9_says_in_one_line_how_to_install_it(tmp_path):
    done = _without_extra("table9", "--profile", "smoke", tmp_path=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "problem: the detection extra (mmcv 2.1.0 built from source, mmengine 0.10.7, mmdet 3.3.0) is not "
        "installed: run `make detection` (about 11 min once; docs/detection.md)"]
    assert not (tmp_path / "runs").exists()  # found before anything is computed
    planned = _without_extra("table9", "--profile", "smoke", "--plan", tmp_path=tmp_path)
    assert planned.returncode == 0 and "detector" in planned.stdout, planned.stderr


def test_the_suite_without_the_extra_imports_every_experiment():
    code = _WITHOUT_EXTRA.replace("from repro.cli import main\nsys.exit(main(sys.argv[1:]))", """
import repro.steps, repro.pipeline
from repro.experiment import discover
print(len(discover()), "mmdet" in sys.modules, "mmengine" in sys.modules)
""")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[1:] == ["False", "False"]


# --- end to end (slow) -------------------------------------------------------------------------------------------

@pytest.mark.slow
@needs_mmdet
def test_table9_at_smoke_trains_and_scores_both_detectors_in_mmdetection(tmp_path):
    import pandas as pd

    from repro.cli import main

    runs, out = tmp_path / "runs", tmp_path / "results"
    assert main(["table9", "--profile", "smoke", "--runs", str(runs), "--results", str(out)]) == 0
    seeds = pd.read_csv(out / "smoke" / "table9_seeds.csv")
    metrics = {f"{prefix}_{kind}_{stat}" for _, prefix, kinds in DETECTORS.values() for kind in kinds.values()
               for stat in ("ap", "ap50", "ap75")}
    assert set(seeds.metric) == metrics and set(seeds.setting) == {"vanilla", "relabel"}
    assert len(seeds) == 2 * len(metrics) and seeds.value.between(0, 100).all()
    assert (out / "smoke" / "table9.png").stat().st_size > 0
    table = pd.read_csv(out / "smoke" / "table9.csv")
    assert table.faster_rcnn_bbox_ap_reported.tolist() == [37.7, 38.2]
    for run in (runs / "detector").iterdir():  # MMDetection's own work dir, inside the run
        assert (run / "work" / "last_checkpoint").is_file() and (run / "backbone.pth").is_file()
