"""The paper-scale path on a fake ImageNet in the real layouts (tests/paperscale.py): the layouts a researcher
unpacks, the released maps' ImageNet-1k ids on a subset of its classes, annotators from plain state dicts, the
pre-flight check, and Table 3 at the paper profile through the commands of docs/paper-scale.md, in one process
and under torchrun."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from repro.cli import main
from repro.config import profile_config, with_changes
from repro.data.imagenet import open_imagenet
from repro.labelmaps import open_labelmaps
from repro.labelmaps.annotator import build_annotator
from repro.models import check_hub_weights, create_model
from repro.pipeline import labelmaps_ref, resources
from repro.runs import Resources, cached
from repro.specs import Spec, is_spec_json
from tests.paperscale import ANNOTATOR, CLASSES, SCALED_DOWN, TRAIN_PER_CLASS, VAL_PER_CLASS, build_paper_scale

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    return build_paper_scale(tmp_path_factory.mktemp("imagenet"))


def _cfg(paper, **changes):
    return with_changes(profile_config("paper"), {"data.root": str(paper.root), **changes})


# --- the layouts ---------------------------------------------------------------------------------------------------

def test_a_flat_val_is_labelled_by_loc_val_solution_and_real_follows_the_subset(paper):
    data = open_imagenet(paper.root, {"source": "imagenet"})
    val = data.eval_sets[0]
    assert val.name == "imagenet" and len(val.images) == CLASSES * VAL_PER_CLASS
    assert all(path.startswith("val/ILSVRC2012_val_") for path in val.images.relpaths)
    # timm's ReaL file holds ImageNet-1k indices: on the subset they are the data's own labels
    assert val.label_sets["real"] == [[int(label)] for label in val.images.labels]
    v2 = {s.name: s for s in data.eval_sets[1:]}
    assert len(v2) == 3 and sorted(set(v2["imagenetv2_top_images"].images.labels.tolist())) == list(range(CLASSES))


def test_a_flat_val_without_its_labels_is_an_error_naming_the_file(paper, tmp_path):
    root = tmp_path / "imagenet"
    shutil.copytree(paper.root / "train", root / "train")
    shutil.copytree(paper.root / "val", root / "val")
    with pytest.raises(FileNotFoundError, match="LOC_val_solution.csv"):
        open_imagenet(root, {"source": "imagenet"})
    labels = tmp_path / "validation_labels.txt"  # tensorflow-datasets' format: one wnid per sorted val file
    solution = {line.split(",")[0]: line.split(",")[1].split()[0]
                for line in (paper.root / "LOC_val_solution.csv").read_text().splitlines()[1:]}
    labels.write_text("".join(solution[name[:-5]] + "\n" for name in sorted(os.listdir(root / "val"))))
    val = open_imagenet(root, {"source": "imagenet", "val_labels": str(labels)}).eval_sets[0]
    assert len(val.images) == CLASSES * VAL_PER_CLASS
    # class numbers (the devkit's count from 1 in its own class order) and "name label" lines are refused by line
    numbers = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    numbers.write_text("".join(f"{1 + i % 1000}\n" for i in range(len(solution))))
    pairs = tmp_path / "val.txt"
    pairs.write_text("".join(f"{name} 0\n" for name in sorted(os.listdir(root / "val"))))
    for wrong, line in ((numbers, "'1'"), (pairs, r"'ILSVRC2012_val_\d{8}\.JPEG 0'")):
        with pytest.raises(ValueError, match=f"{wrong}: label 1 reads {line}, where a labels file gives each val "
                                             "image's wnid"):
            open_imagenet(root, {"source": "imagenet", "val_labels": str(wrong)})
    # wnids of another class list: every image would be left out
    labels.write_text("n99999999\n" * len(solution))
    with pytest.raises(ValueError, match=f"{labels} gives none of the {len(solution)} val images a class of the data"):
        open_imagenet(root, {"source": "imagenet", "val_labels": str(labels)})


def test_a_relative_data_root_names_the_folder_it_reads_so_another_directory_is_another_run(paper, tmp_path,
                                                                                          monkeypatch):
    """The spec held a relative --set as given: run from another working directory, the same string read other
    images and found the first directory's runs in the cache."""
    from repro.pipeline import coco_data_spec, data_spec, robustness_evaluations, transfer_data_spec

    specs = []
    for where in ("a", "b"):
        (tmp_path / where).mkdir()
        monkeypatch.chdir(tmp_path / where)
        cfg = _cfg(paper, **{"data.root": "imagenet", "transfer.root": "transfer", "multilabel.root": "coco",
                             "data.task": "oxford_pets", "robustness.imagenet_a_root": "imagenet-a",
                             "data.v2_root": "v2"})
        sources = {evaluator["type"]: evaluator.get("source") for evaluator in robustness_evaluations(cfg)}
        data = data_spec(cfg)
        specs.append((data["root"], data["v2_root"], transfer_data_spec(cfg)["root"],
                      coco_data_spec(cfg, "multilabel")["root"], sources["imagenet_a"], sources["rendition"]))
    for where, roots in zip("ab", specs):
        assert roots == tuple(str(tmp_path / where / name) for name in ("imagenet", "v2", "transfer", "coco",
                                                                         "imagenet-a", "imagenet/imagenet-r"))
    (tmp_path / "link").symlink_to(paper.root)  # a fixed link to data staged elsewhere stays that path
    assert data_spec(_cfg(paper, **{"data.root": str(tmp_path / "link")}))["root"] == str(tmp_path / "link")


def test_a_v2_root_that_is_set_must_exist(paper, tmp_path):
    with pytest.raises(FileNotFoundError, match="data.v2_root"):
        open_imagenet(paper.root, {"source": "imagenet", "v2_root": str(tmp_path / "nowhere")})


# --- the released maps on a subset of ImageNet's classes -----------------------------------------------------------

def test_released_maps_are_renumbered_to_the_subset(paper, tmp_path):
    cfg = _cfg(paper, **{"labelmap.official_dir": str(paper.maps), "supervision.mode": "relabel"})
    ref = labelmaps_ref(cfg)
    assert is_spec_json(ref) and Spec.from_json(ref)["classes"] == paper.wnids
    store = open_labelmaps(cached(Spec.from_json(ref), resources(cfg, tmp_path)).dir / "store")
    assert store.num_classes == CLASSES
    values, ids = store.read(np.arange(store.num_images))
    assert int(ids.max()) < CLASSES
    top1 = np.array([paper.wnids.index(path.split("/")[0]) for path in store.paths])
    assert (ids[:, 0, 0, 0].numpy() == top1).all()  # each image's own class, renumbered
    dropped = (values == 0)  # entries of classes outside the subset add nothing
    assert dropped.any() and not dropped[:, 0].any()


def test_released_maps_of_other_classes_are_refused(paper, tmp_path):
    root = tmp_path / "other"
    shutil.copytree(paper.root / "train" / paper.wnids[0], root / "train" / "n99999999")
    with pytest.raises(ValueError, match="not a subset of ImageNet-1k"):
        labelmaps_ref(_cfg(paper, **{"data.root": str(root), "labelmap.official_dir": str(paper.maps)}))
    # ImageNet's classes and a stray folder: the message names the folder
    for wnid in paper.wnids:
        (root / "train" / wnid).symlink_to(paper.root / "train" / wnid, target_is_directory=True)
    with pytest.raises(ValueError, match=r"not a subset of ImageNet-1k's \(1 of them not ImageNet-1k classes: "
                                         r"n99999999; if they are stray folders of the data, move them out\)"):
        labelmaps_ref(_cfg(paper, **{"data.root": str(root), "labelmap.official_dir": str(paper.maps)}))


# --- annotators from anywhere --------------------------------------------------------------------------------------

def test_a_plain_state_dict_with_a_1000_class_head_needs_a_class_map(paper):
    with pytest.raises(ValueError, match="annotator.class_map"):
        build_annotator(paper.annotator, arch=ANNOTATOR, wnids=paper.wnids)
    annotator = build_annotator(paper.annotator, arch=ANNOTATOR, wnids=paper.wnids, class_map="imagenet-1k")
    saved = torch.load(paper.annotator, weights_only=True)
    assert annotator.num_classes == CLASSES
    assert torch.equal(annotator.model.get_classifier().weight, saved["fc.weight"][paper.imagenet_ids])
    wrapped = paper.root.parent / "wrapped.pth"  # {"state_dict": ...} with DDP's "module." prefix
    torch.save({"state_dict": {f"module.{k}": v for k, v in saved.items()}}, wrapped)
    assert build_annotator(wrapped, arch=ANNOTATOR).num_classes == 1000


def test_a_pretrained_hub_annotator_keeps_its_head_and_needs_a_class_map(paper, monkeypatch, tmp_path):
    """timm's pretrained weights stand in by a seeded random model: the path must not swap in a random head."""
    import repro.models as models
    from repro.steps import classifier_from_ref

    create = models.create_model
    monkeypatch.setattr(models, "check_hub_weights", lambda name: None)
    monkeypatch.setattr(models, "create_model", lambda spec, num_classes, pretrained=False, **kw:
                        create(spec, num_classes, pretrained=False, **kw))
    ref = {"source": "timm", "model": {"name": "test_resnet", "kwargs": {}}, "pretrained": True, "checkpoint": None}
    resources = Resources(tmp_path)
    with pytest.raises(ValueError, match="1000-class head"):
        classifier_from_ref(ref, paper.wnids, resources)
    torch.manual_seed(0)
    fitted = classifier_from_ref({**ref, "class_map": "imagenet-1k"}, paper.wnids, resources)
    torch.manual_seed(0)
    full = create({"name": "test_resnet", "kwargs": {}}, None)
    assert torch.equal(fitted.get_classifier().weight, full.get_classifier().weight[paper.imagenet_ids])


def test_relabel_takes_a_plain_state_dict(paper, tmp_path, capsys):
    import timm

    state_dict = tmp_path / "test_resnet.pth"  # timm's own file format: a bare state dict, 1000-class head
    torch.save(timm.create_model("test_resnet").state_dict(), state_dict)
    out = tmp_path / "maps"
    assert main(["relabel", "--annotator", str(state_dict), "--arch", "test_resnet", "--data", str(paper.root),
                 "--out", str(out), "--input-size", "64", "--class-map", "imagenet-1k", "--limit", "4"]) == 0
    maps = open_labelmaps(out)
    assert maps.num_images == 4 and maps.num_classes == CLASSES
    assert int(maps.read(np.arange(4))[1].max()) < CLASSES
    capsys.readouterr()
    assert main(["relabel", "--annotator", str(paper.annotator), "--arch", "resnet18", "--data", str(paper.root),
                 "--out", str(out), "--input-size", "64", "--class-map", "imagenet-1k", "--limit", "4"]) == 2
    assert "does not fit timm's resnet18" in capsys.readouterr().err  # the tiny net is not timm's default resnet18
    assert main(["relabel", "--annotator", str(paper.annotator), "--data", str(paper.root), "--out", str(out)]) == 2
    assert "--arch" in capsys.readouterr().err


def test_an_original_release_is_converted_by_timm_and_checked_before_any_run(tmp_path):
    """ASL's TResNet files name their layers conv1.0 / conv1.1 and hold InplaceABN's weights: timm's conversion of
    the architecture is applied on loading, and the pre-flight check loads every parameter (on the meta device)
    so that a checkpoint that does not fit fails in seconds, not after the fine-tunes before its first use."""
    import re

    from repro.models import load_classifier
    from repro.preflight import PROBLEM, check_pretrained

    spec = {"name": "tresnet_m", "kwargs": {}}
    torch.manual_seed(0)
    model = create_model(spec, num_classes=5).eval()
    released = {re.sub(r"conv(\d+)\.conv", r"conv\1.0", re.sub(r"conv(\d+)\.bn", r"conv\1.1", key)): value
                for key, value in model.state_dict().items()}  # the release's names (InplaceABN weights > 0)
    path = tmp_path / "asl_tresnet_m.pth"
    torch.save({"model": released}, path)
    loaded = load_classifier(path, spec)
    probe = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(probe), model(probe), atol=1e-3)  # |w| + 1e-5: InplaceABN's weights to BN's
    ref = {"source": "timm", "model": spec, "pretrained": False, "checkpoint": str(path)}
    assert [f.level for f in check_pretrained(ref, None)] == ["ok"]
    (finding,) = check_pretrained({**ref, "model": {"name": "tresnet_l", "kwargs": {}}}, None)
    assert finding.level == PROBLEM and "does not fit timm's tresnet_l" in finding.message


def test_a_missing_users_file_names_its_key(paper, tmp_path, capsys):
    status = main(["check", "table10", "--profile", "paper", "--set", f"data.root={paper.root}",
                   "--set", f"multilabel.annotator.checkpoint={tmp_path / 'asl.pth'}", "--runs", str(tmp_path)])
    assert status == 2
    assert f"problem: table10: multilabel.annotator.checkpoint {tmp_path / 'asl.pth'}: no such file" in \
        capsys.readouterr().err


def test_missing_hub_weights_offline_fail_in_seconds_naming_what_to_do(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    started = time.time()
    with pytest.raises(FileNotFoundError, match="only way for Figures 4 and 6.*annotator.checkpoint"):
        check_hub_weights("tf_efficientnet_l2.ns_jft_in1k_475")
    assert time.time() - started < 5


# --- the pre-flight check ------------------------------------------------------------------------------------------

def _check(args, capsys):
    started = time.time()
    status = main(["check", "--profile", "paper", *args])
    out = capsys.readouterr()
    assert time.time() - started < 10
    return status, out.out + out.err


def test_check_passes_the_fixture_and_lists_what_it_read(paper, tmp_path, capsys):
    status, text = _check(["--set", f"data.root={paper.root}", "--set", f"labelmap.official_dir={paper.maps}",
                           "--runs", str(tmp_path)], capsys)
    assert status == 0, text
    assert f"val: {CLASSES * VAL_PER_CLASS} images (flat" in text and "renumbered" in text
    assert "inputs ok" in text.splitlines() and not any(line.startswith("problem") for line in text.splitlines())
    assert "absent: shankar" in text  # the stricter label set is not part of an ImageNet download
    # the choices only the user can make: Beyer et al.'s list for label cleaning, the maps' measured orientation
    assert "absent: supervision.clean_list is not set" in text
    assert f"absent: a measured orientation of {paper.maps}: read as stored" in text
    (tmp_path / "kept.txt").write_text("n01443537_0.JPEG\n")
    status, text = _check(["--set", f"data.root={paper.root}", "--set", f"labelmap.official_dir={paper.maps}",
                           "--set", "labelmap.transpose=true", "--set", f"supervision.clean_list={tmp_path}/kept.txt",
                           "--runs", str(tmp_path)], capsys)
    assert "read as [k, W, H] (labelmap.transpose=true)" in text and "clean_list is not set" not in text


@pytest.mark.parametrize("broken, expected", [
    ("no_val_labels", "LOC_val_solution.csv"),
    ("no_train", "has no train/ folder"),
    ("maps_missing_images", "have no map"),
    ("annotator_head", "annotator.class_map"),
    ("real_too_short", "has no entry"),
    ("maps_folder_missing", "labelmap.official_dir"),
    ("val_renamed", "data.real_json"),
])
def test_check_reports_each_broken_layout_in_one_line(paper, tmp_path, capsys, broken, expected):
    root = tmp_path / "imagenet"
    shutil.copytree(paper.root, root, ignore=shutil.ignore_patterns("relabel_maps"))
    sets = [f"data.root={root}", f"labelmap.official_dir={paper.maps}"]
    if broken == "no_val_labels":
        (root / "LOC_val_solution.csv").unlink()
    elif broken == "no_train":
        shutil.rmtree(root / "train")
    elif broken == "maps_missing_images":
        (root / "train" / paper.wnids[0] / "extra_image.JPEG").write_bytes(
            (root / "train" / paper.wnids[0] / f"{paper.wnids[0]}_0.JPEG").read_bytes())
    elif broken == "annotator_head":
        sets = [f"data.root={root}", f"annotator.checkpoint={paper.annotator}",
                "annotator.model=" + json.dumps(ANNOTATOR), "annotator.pretrained=false"]
    elif broken == "real_too_short":
        (root / "real.json").write_text(json.dumps([[0]] * 10))
    elif broken == "val_renamed":  # labelled by a labels file in file-name order, which ReaL cannot follow
        files = sorted(path.name for path in (root / "val").iterdir())
        (root / "val_labels.txt").write_text("".join(
            row.split(",")[1].split()[0] + "\n" for row in sorted((root / "LOC_val_solution.csv").read_text()
                                                                   .splitlines()[1:])))
        for number, name in enumerate(files):
            (root / "val" / name).rename(root / "val" / f"image_{number:03d}.JPEG")
        sets.append(f"data.val_labels={root / 'val_labels.txt'}")
    elif broken == "maps_folder_missing":
        sets = [f"data.root={root}", f"labelmap.official_dir={tmp_path / 'no_maps'}"]
    status, text = _check([arg for item in sets for arg in ("--set", item)] + ["--runs", str(tmp_path / "runs")],
                          capsys)
    problems = [line for line in text.splitlines() if line.startswith("problem:")]
    assert status == 2 and len(problems) == 1 and expected in problems[0], text


def test_check_reads_an_annotator_saved_in_torchs_legacy_format(paper, tmp_path, capsys):
    """The check memory-maps a checkpoint, which the legacy (pre-zip) format refuses; the run reads it."""
    legacy = tmp_path / "legacy.pth"
    torch.save(torch.load(paper.annotator, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    sets = [f"data.root={paper.root}", f"annotator.checkpoint={legacy}", "annotator.model=" + json.dumps(ANNOTATOR),
            "annotator.pretrained=false", "annotator.class_map=imagenet-1k"]
    status, text = _check([arg for item in sets for arg in ("--set", item)] + ["--runs", str(tmp_path / "runs")],
                          capsys)
    assert status == 0 and f"annotator: {legacy} (" in text, text
    for broken, content in (("empty.pth", b""), ("text.pth", b"not a checkpoint\n")):  # a failed copy, a wrong file
        (tmp_path / broken).write_bytes(content)
        status, text = _check([arg for item in sets[:1] + [f"annotator.checkpoint={tmp_path / broken}"] + sets[2:]
                               for arg in ("--set", item)] + ["--runs", str(tmp_path / "runs")], capsys)
        assert status == 2 and f"{tmp_path / broken} cannot be read as a torch checkpoint" in text, text


def test_a_missing_imagenet_v2_variant_is_named_with_table_a1_and_a_missing_v2_root_is_a_problem(paper, tmp_path,
                                                                                               capsys):
    root = tmp_path / "imagenet"
    shutil.copytree(paper.root, root, ignore=shutil.ignore_patterns("relabel_maps"))
    shutil.rmtree(root / "v2" / "imagenetv2-top-images-format-val")
    sets = ["--set", f"data.root={root}", "--set", f"labelmap.official_dir={paper.maps}", "--runs", str(tmp_path)]
    status, text = _check(["tableA1", *sets], capsys)
    assert status == 0 and "absent: imagenetv2_top_images" in text and "Table A1" in text, text
    status, text = _check(["table3", *sets, "--set", f"data.v2_root={tmp_path / 'nowhere'}"], capsys)
    assert status == 2 and "problem: data.v2_root" in text, text


def test_check_takes_the_process_count_make_paper_trains_on(paper, tmp_path, capsys):
    """make paper checks before torchrun starts, so WORLD_SIZE is not yet set: the count is given."""
    sets = ["--set", f"data.root={paper.root}", "--set", f"labelmap.official_dir={paper.maps}", "--runs", str(tmp_path)]
    assert _check([*sets, "--processes", "8"], capsys)[0] == 0
    status, text = _check([*sets, "--processes", "7"], capsys)
    problems = [line for line in text.splitlines() if line.startswith("problem:")]
    assert status == 2 and problems and all("split" in line and "7" in line for line in problems), text
    with pytest.raises(SystemExit):
        _check([*sets, "--processes", "0"], capsys)


def test_table5s_extra_pool_is_checked_before_any_table_trains(paper, tmp_path, capsys):
    """Table 5's pool was first read when its label maps started, after Tables 2-4 had trained."""
    root = tmp_path / "imagenet"
    shutil.copytree(paper.root, root, ignore=shutil.ignore_patterns("relabel_maps"))
    sets = ["--set", f"data.root={root}", "--set", f"labelmap.official_dir={paper.maps}", "--runs", str(tmp_path)]
    sets += [arg for item in _local_annotator(paper) for arg in ("--set", item)]  # its 4x4 grid: the maps'

    def pool_problems(*more):
        status, text = _check(["table5", *sets, *more], capsys)
        return [line for line in text.splitlines() if line.startswith("problem: extra_data")]

    assert len(pool_problems()) == 1 and f"no images under {root / 'extra'}" in pool_problems()[0]
    (root / "extra" / ".cache").mkdir(parents=True)  # a tool's hidden folder holds no pool image
    shutil.copy(root / "train" / paper.wnids[0] / f"{paper.wnids[0]}_0.JPEG", root / "extra" / ".cache" / "a.JPEG")
    assert len(pool_problems()) == 1
    (root / "extra" / "n0000" / "deep").mkdir(parents=True)  # any layout: ImageNet-21k's class folders, or deeper
    shutil.copy(root / "train" / paper.wnids[0] / f"{paper.wnids[0]}_0.JPEG", root / "extra" / "n0000" / "deep")
    assert pool_problems() == []
    assert pool_problems("--set", "extra_data.images=5") == [
        f"problem: extra_data.images = 5 is fewer than one image per class ({CLASSES} classes): raise it"]
    # the pool's maps must have the released maps' grid: one student reads both (it failed after the pool's pass)
    assert pool_problems("--set", "labelmap.input_size=96") == [
        "problem: extra_data: the pool's label maps would be 6x6 (the annotator at labelmap.input_size 96, "
        f"output_stride 16) beside the training images' 4x4 (labelmap.official_dir {paper.maps}): set "
        "labelmap.input_size and labelmap.output_stride so that the annotator's grid is the training maps' (the "
        "paper: EfficientNet-L2 at 475 and 32, 15x15)"]
    status, text = _check(["table5", *sets, "--set", "labelmap.transpose=true"], capsys)  # square: the same
    assert not [line for line in text.splitlines() if line.startswith("problem: extra_data")], text


# --- Table 3 at the paper profile, through the documented commands ------------------------------------------------

def _documented(prefix: str) -> list[str]:
    """The command of docs/paper-scale.md that starts with `prefix`, as arguments."""
    text = (REPO / "docs" / "paper-scale.md").read_text()
    lines = [line.strip().rstrip("\\").strip() for line in text.replace("\\\n", " ").splitlines()]
    matches = [line for line in lines if line.startswith(prefix) and not line.endswith("--plan")]
    assert matches, f"docs/paper-scale.md has no command starting with {prefix!r}"
    return shlex.split(matches[0])


def _command(args, paper, tmp_path, extra_sets) -> list[str]:
    """A documented command on the fixture: its paths replaced, scaled down, its cache and results in tmp_path."""
    args = [arg.replace("/data/imagenet", str(paper.root)).replace("/data/relabel_maps", str(paper.maps))
            for arg in args]
    sets = [arg for item in SCALED_DOWN + extra_sets for arg in ("--set", item)]
    command = [sys.executable, *args[1:]] if args[0] == "python" else \
        [sys.executable, "-m", "torch.distributed.run", *args[1:]]
    return command + sets + ["--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results")]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(args, paper, tmp_path, extra_sets):
    done = subprocess.run(_command(args, paper, tmp_path, extra_sets), cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _student_metrics(runs: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(runs.glob("train/*/metrics.json"))]


PROBE = """
import os, sys
import torch, torch.distributed as dist
from repro.runs import COMPUTE, Resources, cached
from repro.specs import Spec

def all_ranks(spec, run, resources):
    assert dist.is_initialized(), "rank " + os.environ["RANK"] + " computes without the process group"
    ranks = torch.ones(1)
    dist.all_reduce(ranks)
    return {"ranks": float(ranks)}

COMPUTE["eval"] = all_ranks
probe = Spec("eval", {"probe": int(sys.argv[2]) if len(sys.argv) > 2 else 1})
# one write per rank: print's separate pieces of two ranks interleave on the shared pipe
sys.stdout.write(f"rank {os.environ['RANK']} {cached(probe, Resources(runs_root=sys.argv[1])).metrics['ranks']}\\n")
sys.stdout.flush()
"""


def test_an_evaluation_computed_first_under_torchrun_runs_in_the_process_group(tmp_path):
    """An evaluation can be the first run a torchrun job computes (its students cached): every rank joins the
    group and computes it together, and each reads the metrics rank 0 wrote (before, each rank scored the whole set
    alone on GPU 0, and the others read metrics.json before it was written)."""
    (tmp_path / "probe.py").write_text(PROBE)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(tmp_path / "probe.py"), str(tmp_path / "runs")], cwd=REPO,
                          env={**ENV, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(done.stdout.split("\n"))[1:] == ["rank 0 2.0", "rank 1 2.0"]


def test_a_torchrun_job_waits_for_a_run_another_job_is_computing(tmp_path):
    """While another job holds a run's lock (Table 3 and Table 4 queued at once share a student), the ranks of a
    torchrun job that needs it all wait, and read the other job's result; before, the other ranks started
    computing at once while rank 0 waited for the lock, their collectives timing out after 10-30 minutes."""
    import fcntl

    from repro.runs import Run
    from repro.specs import Spec

    (tmp_path / "probe.py").write_text(PROBE)
    run = Run(Spec("eval", {"probe": 2}), tmp_path / "runs").create()
    with open(run.dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other job, computing
        job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                "2", str(tmp_path / "probe.py"), str(tmp_path / "runs"), "2"], cwd=REPO,
                               env={**ENV, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
        time.sleep(8)
        (run.dir / "metrics.json").write_text('{"ranks": -1.0}')  # the other job's result
        fcntl.flock(lock, fcntl.LOCK_UN)
    try:
        out, err = job.communicate(timeout=90)
    finally:
        if job.poll() is None:  # a job whose ranks disagree hangs in its collectives
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 0, err[-2000:]
    assert sorted(out.split("\n"))[1:] == ["rank 0 -1.0", "rank 1 -1.0"]  # neither computed it again


@pytest.mark.slow
def test_table3_at_the_paper_profile_in_one_process(paper, tmp_path):
    _run(_documented("python -m repro table3 --profile paper"), paper, tmp_path, [])
    table = (tmp_path / "results" / "paper" / "table3.csv").read_text()
    assert "relabel" in table and "label_cleaning" in table
    metrics = _student_metrics(tmp_path / "runs")
    assert len(metrics) == 4
    for m in metrics:
        assert m["imagenet_images"] == CLASSES * VAL_PER_CLASS and m["real_images"] == CLASSES * VAL_PER_CLASS
        assert m["world_size"] == 1 and m["imagenetv2_top_images_images"] == CLASSES


def _local_annotator(paper) -> list[str]:
    """The fixture's plain state dict, with its 1000-class head, in place of the Hub's EfficientNet-L2."""
    return [f"annotator.checkpoint={paper.annotator}", "annotator.model=" + json.dumps(ANNOTATOR),
            "annotator.pretrained=false", "annotator.class_map=imagenet-1k", "labelmap.input_size=64",
            "labelmap.output_stride=16"]


@pytest.mark.slow
def test_table5_at_the_paper_profile_labels_an_extra_pool_beside_the_released_maps(paper, tmp_path):
    """Table 5's extra-data row at paper scale: the annotator labels a pool of unlabelled images (any folder
    layout), a subsample joins the training images, whose maps stay the released ones."""
    root = tmp_path / "imagenet"
    shutil.copytree(paper.root, root)
    pool = sorted((root / "train").rglob("*.JPEG"))[:24]
    for number, image in enumerate(pool):
        (root / "extra" / f"n9{number % 3:07d}").mkdir(parents=True, exist_ok=True)
        shutil.copy(image, root / "extra" / f"n9{number % 3:07d}" / f"pool_{number}.JPEG")
    command = [sys.executable, "-m", "repro", "table5", "--profile", "paper", "--runs", str(tmp_path / "runs"),
               "--results", str(tmp_path / "results")]
    sets = [f"data.root={root}", f"labelmap.official_dir={root / 'relabel_maps'}", *SCALED_DOWN,
            *_local_annotator(paper), f"extra_data.images={2 * CLASSES}"]
    done = subprocess.run(command + [arg for item in sets for arg in ("--set", item)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    extra = [m for m in _student_metrics(tmp_path / "runs") if "extra_pool_images" in m]
    assert len(extra) == 1 and extra[0]["extra_pool_images"] == len(pool)
    assert extra[0]["train_images"] == len(list((root / "train").rglob("*.JPEG"))) + extra[0]["extra_images"] > 48
    generated = [json.loads(path.read_text())["spec"] for path in (tmp_path / "runs").glob("labelmaps/*/spec.json")]
    assert [spec["split"] for spec in generated if "split" in spec] == ["extra"]  # train's maps: the released ones
    assert "resnet50 relabel_cutmix_extra_data" in done.stdout + done.stderr


@pytest.mark.slow
def test_table3_at_the_paper_profile_under_torchrun_generates_its_label_maps(paper, tmp_path):
    args = _documented("torchrun --standalone --nproc_per_node")
    args[args.index("--nproc_per_node") + 1] = "2"
    _run(args, paper, tmp_path, _local_annotator(paper))
    runs = tmp_path / "runs"
    generated = [path.parent for path in runs.glob("labelmaps/*/spec.json")
                 if "source" not in json.loads(path.read_text())["spec"]]
    assert len(generated) == 1  # the annotator's pass (the students' top-5 maps are derived from it)
    for run in runs.glob("labelmaps/*"):  # each computed once, rank 0 recording it
        assert (run / "log.txt").read_text().count(" started") == 1 and (run / "metrics.json").exists()
    # the pass split over both ranks, each annotating half the images, joined by rank 0 into one store
    metrics = json.loads((generated[0] / "metrics.json").read_text())
    assert metrics["generation_world_size"] == 2 and metrics["num_images"] == CLASSES * TRAIN_PER_CLASS
    assert json.loads((generated[0] / "store" / "index.json").read_text())["shares"] == 2
    assert sorted(path.name for path in generated[0].iterdir() if "shares" in path.name) == []
    for m in _student_metrics(runs):
        assert m["world_size"] == 2 and m["global_batch"] == 8 and m["per_device_batch"] == 4
    meta = json.loads((tmp_path / "results" / "paper" / "table3_meta.json").read_text())
    assert len(meta["invocations"]) == 1  # rank 0 alone wrote the results


@pytest.mark.slow
def test_table3_on_two_nodes_through_torchruns_rendezvous(paper, tmp_path):
    """Two `torchrun --nnodes 2` processes on this machine stand for two nodes sharing a filesystem."""
    args = _documented("torchrun --nnodes 2")
    args[args.index("--nproc_per_node") + 1] = "1"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args[args.index("--rdzv_endpoint") + 1] = f"127.0.0.1:{port}"
    command = _command(args, paper, tmp_path, _local_annotator(paper))
    nodes = [subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [node.communicate(timeout=900) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]
    metrics = _student_metrics(tmp_path / "runs")
    assert len(metrics) == 4 and all(m["world_size"] == 2 for m in metrics)
    assert (tmp_path / "results" / "paper" / "table3.csv").exists()


@pytest.mark.slow
def test_table8_at_the_paper_profile_fine_tunes_table3s_students_on_torchvision_layouts(paper, tmp_path):
    from tests.transfer_fixtures import BUILDERS

    transfer = tmp_path / "transfer"
    for task in ("dtd", "oxford_pets"):
        BUILDERS[task](transfer)
    args = [arg.replace("/data/transfer", str(transfer)) for arg in _documented("python -m repro table8")]
    _run(args, paper, tmp_path, ['transfer.tasks=["dtd", "oxford_pets"]',
                                 "transfer.lr=[0.01]", "transfer.weight_decay=[0.0001]",
                                 'transfer.train={"iterations": 2, "batch_size": 4, "warmup_epochs": 0}'])
    grid = (tmp_path / "results" / "paper" / "table8_grid.csv").read_text().splitlines()
    assert len(grid) == 1 + 2 * 2 and all(line.endswith("True") for line in grid[1:])  # one point: chosen
    table = (tmp_path / "results" / "paper" / "table8.csv").read_text()
    assert "dtd_top1" in table and "oxford_pets_top1" in table
    students = [m for m in _student_metrics(tmp_path / "runs") if "test_top1" not in m]
    assert len(students) == 2  # the vanilla and ReLabel ResNets, trained once, each fine-tuned twice


@pytest.mark.slow
def test_table10_at_the_paper_profile_fine_tunes_the_vanilla_students_on_coco_2017(paper, tmp_path):
    from tests.paperscale import COCO_CATEGORIES, build_coco_2017

    coco = build_coco_2017(tmp_path / "coco", images_per_split=8)
    machine = tmp_path / "tresnet.pth"  # a plain state dict of a multi-label classifier over COCO's categories
    torch.save(create_model(ANNOTATOR, num_classes=len(COCO_CATEGORIES)).state_dict(), machine)
    args = [arg.replace("/data/coco", str(coco)).replace("/models/tresnet_xl_coco.pth", str(machine))
            for arg in _documented("python -m repro table10")]
    tiny = json.dumps(ANNOTATOR)
    _run(args, paper, tmp_path, [f"models.resnet50={tiny}", f"models.resnet101={tiny}",
                                 'multilabel.models={"resnet50": 32, "resnet101": 40}', "multilabel.grid=4",
                                 'multilabel.train={"epochs": 1, "batch_size": 4, "warmup_epochs": 0}', f"multilabel.annotator.model={tiny}",
                                 "multilabel.annotator.input_size=32", "multilabel.annotator.output_stride=8"])
    table = (tmp_path / "results" / "paper" / "table10.csv").read_text()
    assert table.count("coco_map") and all(s in table for s in ("vanilla", "relabel_machine", "relabel_oracle"))
    per_class = (tmp_path / "results" / "paper" / "table10_per_class.csv").read_text().splitlines()
    assert len(per_class) == 1 + 2 * 3 * len(COCO_CATEGORIES)
    finetunes = [m for m in _student_metrics(tmp_path / "runs") if "coco_map" in m]
    assert len(finetunes) == 6 and all(m["coco_images"] == 8 for m in finetunes)
    assert len(_student_metrics(tmp_path / "runs")) == 6 + 1  # the two vanilla starts are one tiny model's run


def test_transposed_released_maps_leave_the_variants_with_generated_maps_reading_them_as_stored(paper):
    """Figure 4's annotators and Table 6's top-10 generate their own maps ([k, H, W]): a transpose meant for the
    released files must not stop them, nor turn them."""
    from repro.sweeps import annotator_sweep
    from repro.tables.table6 import runs as table6_runs

    cfg = _cfg(paper, **{"labelmap.official_dir": str(paper.maps), "labelmap.transpose": True,
                         "supervision.mode": "relabel"})
    assert "transposed" in labelmaps_ref(cfg)
    for changes in [*annotator_sweep(cfg).values(), table6_runs(cfg)[("resnet50", "relabel_fp32_top10")]]:
        ref = labelmaps_ref(with_changes(cfg, changes))  # raised before: transpose without official_dir
        assert "transposed" not in ref
    assert "transposed" in labelmaps_ref(with_changes(cfg, table6_runs(cfg)[("resnet50", "relabel_fp32_top1")]))


def test_the_figures_plan_every_run_they_read_so_that_submitted_jobs_compute_them(paper, tmp_path):
    """With released maps no student needs the annotator's pass, yet Figure 6 and the costs time it, and Figures 4
    and 6 report the pretrained annotators' top-1: runs left out of the plan were computed at tabulation, which
    after --submit is the login node's, on its CPU."""
    from repro.experiment import Context, discover
    from repro.pipeline import annotator_eval_spec, generated_labelmaps_spec
    from repro.sweeps import annotator_sweep

    cfg = _cfg(paper, **{"labelmap.official_dir": str(paper.maps)})
    ctx = Context(profile="paper", config=cfg, seeds=[0], runs_root=tmp_path / "runs", results_root=tmp_path)
    experiments = discover()
    planned = {name: {spec.hash for spec in experiments[name].plan(ctx)} for name in ("figure4", "figure6", "costs")}
    generation = generated_labelmaps_spec(cfg).hash
    assert generation in planned["figure6"] and generation in planned["costs"]
    evaluations = {annotator_eval_spec(with_changes(cfg, changes)).hash for changes in annotator_sweep(cfg).values()}
    assert len(evaluations) == 7 and evaluations <= planned["figure4"]


def test_a_pretrained_annotator_is_scored_with_the_resize_filter_its_weights_were_evaluated_with(paper):
    from repro.pipeline import annotator_eval_spec
    from repro.sweeps import annotator_sweep

    cfg = _cfg(paper)
    views = [annotator_eval_spec(with_changes(cfg, changes))["view"] for changes in annotator_sweep(cfg).values()]
    # timm's EfficientNet configs: bicubic; the ResNeXt WSL weights: bilinear
    assert [view["interpolation"] for view in views] == ["bicubic"] * 2 + ["bilinear"] + ["bicubic"] * 4
    assert [view["size"] for view in views] == [240, 300, 224, 672, 456, 600, 475]
