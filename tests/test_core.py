"""The core the experiments are built on: specs hashed whole, evaluations as cached runs of trained models, a
fine-tune from a finished run, a new objective registered from outside, and `--plan`."""
import copy

import pytest
import torch

from repro.cli import main
from repro.config import get_path, profile_config, with_changes
from repro.pipeline import (annotator_spec, eval_spec, evaluate_student, kd_changes, student_spec, train_student,
                            world_spec)
from repro.plan import plan_total, with_inputs
from repro.runs import Run
from repro.specs import Spec, leaf_paths
from repro.train.objectives import OBJECTIVES, Objective, one_hot
from tests.fixtures import NUM_CLASSES, tiny_config


def _perturbed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    return "x"  # None, an empty list or dict


def _set(body, path, value):
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _get(body, path):
    for key in path:
        body = body[key]
    return body


def _every_spec():
    cfg = profile_config("proxy")
    relabel = with_changes(cfg, {"supervision.mode": "relabel", "supervision.cutmix": True})
    extra = with_changes(relabel, {"extra_data.enabled": True})
    students = [student_spec(c) for c in (cfg, relabel, extra, with_changes(cfg, kd_changes(cfg)),
                                          with_changes(cfg, {"supervision.mode": "label_cleaning"}),
                                          with_changes(relabel, {"labelmap.dtype": "int8", "labelmap.topk": 3}))]
    tuned = student_spec(with_changes(cfg, {"train.init": {"run": students[1], "reset_head": 5}}))
    return with_inputs(students + [tuned, eval_spec(students[1], {"type": "imagenetv2", "variant": "top_images"})])


def test_every_leaf_of_every_spec_is_in_its_hash():
    specs = _every_spec()
    assert {spec.kind for spec in specs} == {"world", "annotator", "labelmaps", "train", "eval"}
    for spec in specs:
        for path in leaf_paths(spec.body):
            body = copy.deepcopy(spec.body)
            _set(body, path, _perturbed(_get(body, path)))
            assert Spec(spec.kind, body).hash != spec.hash, (spec.kind, path)



# config keys a ReLabel student's result does not depend on: resources, other modes' fields, other
# architectures' entries, a trained annotator's pretrained-weights keys, extra data while it is off; and the data
# section's files, which must exist (they enter by content: tests/test_figures.py)
NOT_IN_A_RELABEL_STUDENT = ("resources.", "paths.", "models.", "recipes.", "profile", "supervision.smoothing",
                            "supervision.kd_", "supervision.cutmix_", "annotator.pretrained", "annotator.checkpoint", "annotator.class_map",
                            "annotator.source", "extra_data.images", "extra_data.split", "labelmap.official_dir",
                            "labelmap.topk", "labelmap.dtype", "world.", "annotator.train.", "data.val_labels", "data.real_json",
                            "data.shankar_json", "data.boxes_csv", "train.init", "supervision.mode",
                            "robustness.",  # Table 7's sets and options: in its evaluations' specs
                            "data.task", "transfer.",  # Table 8's: in its fine-tunes' specs (tests/test_transfer.py)
                            # Table 10's: in its fine-tunes' specs (tests/test_multilabel.py)
                            "data.multilabel", "multilabel.", "supervision.oracle_",
                            "supervision.clean_list",  # label cleaning's: tests/test_train.py
                            "detection.",  # Table 9's: in its detector runs' specs (tests/test_detection.py)
                            "convergence.")  # the convergence study's lengths: each is a student's train.epochs


def test_a_change_of_any_config_key_that_can_change_a_student_changes_its_hash():
    cfg = with_changes(profile_config("proxy"), {"supervision.mode": "relabel"})
    base = student_spec(cfg).hash
    for path in leaf_paths(cfg):
        dotted = ".".join(str(p) for p in path)
        if any(dotted.startswith(skip) for skip in NOT_IN_A_RELABEL_STUDENT) or isinstance(path[-1], int):
            continue
        if dotted == "labelmap.transpose":  # turns released maps only: tests/test_orientation.py checks its hash
            continue
        changed = copy.deepcopy(cfg)
        _set(changed, path, _perturbed(get_path(cfg, dotted)))
        assert student_spec(changed).hash != base, dotted
    # the world, the annotator's recipe and the label-map variant reach the student through its inputs
    for dotted, value in (("world.n_train", 9999), ("annotator.train.epochs", 9), ("labelmap.topk", 3),
                          ("labelmap.dtype", "fp16")):
        assert student_spec(with_changes(cfg, {dotted: value})).hash != base, dotted
    # and what cannot change a result is not in any spec
    assert student_spec(with_changes(cfg, {"resources.workers": 7, "resources.batch_size_eval": 3})).hash == base


def test_every_robustness_option_changes_an_evaluation_and_no_student():
    from repro.pipeline import eval_spec, robustness_evaluations

    cfg = profile_config("smoke")
    student = student_spec(cfg)

    def evaluation_hashes(config):
        return {eval_spec(student, e).hash for e in robustness_evaluations(config)}

    base = evaluation_hashes(cfg)
    for key, value in cfg["robustness"].items():
        if key.endswith("_root"):
            continue  # paper scale's folders; the world's sets are specs
        changed = with_changes(cfg, {f"robustness.{key}": "resnet101" if key == "filter_arch" else _perturbed(value)})
        assert evaluation_hashes(changed) != base and student_spec(changed) == student, key


def test_one_annotator_serves_students_of_every_seed_and_recipe():
    cfg = profile_config("proxy")
    assert annotator_spec(with_changes(cfg, {"seed": 3, "train.lr": 0.5})) == annotator_spec(cfg)


@pytest.fixture()
def fixture_config(imagenet, tmp_path):
    return tiny_config(**{"data.source": "imagenet", "data.root": str(imagenet.root),
                          "data.v2_root": str(imagenet.root / "v2"), "train.epochs": 1}), tmp_path / "runs"


def test_an_evaluation_of_a_trained_student_is_its_own_run(fixture_config):
    cfg, runs = fixture_config
    trained = train_student(cfg, runs)
    metrics_file = Run(student_spec(cfg), runs).dir / "metrics.json"
    stamp = metrics_file.stat().st_mtime_ns
    v2 = evaluate_student(cfg, {"type": "imagenetv2", "variant": "matched_frequency"}, runs)
    assert v2["imagenetv2_matched_frequency_top1"] == pytest.approx(trained["imagenetv2_matched_frequency_top1"])
    real = evaluate_student(cfg, {"type": "real"}, runs)
    assert real["real_top1"] == pytest.approx(trained["real_top1"])
    assert len(list((runs / "eval").iterdir())) == 2 and len(list((runs / "train").iterdir())) == 1
    assert metrics_file.stat().st_mtime_ns == stamp  # no evaluator touches the training run
    with pytest.raises(ValueError, match="unknown evaluator type"):
        evaluate_student(cfg, {"type": "fgsmm"}, runs)


def test_a_runs_recorded_wall_time_leaves_out_the_inputs_it_computed_first(fixture_config):
    """The report's compute times and the progress estimates add up runs' wall times: an evaluation that trained
    its student first must not count the training again."""
    import time

    cfg, runs = fixture_config
    started = time.time()
    evaluate_student(cfg, {"type": "real"}, runs)
    elapsed = time.time() - started
    student = Run(student_spec(cfg), runs)
    evaluation = Run(eval_spec(student_spec(cfg), {"type": "real"}), runs)
    walls = [float(run.metrics["wall_seconds_last_session"]) for run in (student, evaluation)]
    assert sum(walls) <= elapsed + 0.05, walls


def test_a_run_records_the_machines_that_computed_it(tmp_path, monkeypatch):
    """Kinds of CPU and GPU round differently, so a run names the machine of each session that computed it."""
    from repro.environment import computing_device
    from repro.runs import COMPUTE, DEVICES_FILE, Resources, cached

    monkeypatch.setitem(COMPUTE, "world", lambda spec, run, resources: {"value": 1.0})
    fresh = cached(Spec("world", {"test": "fresh"}), Resources(tmp_path))
    assert fresh.metrics["computed_on"] == [computing_device()]
    assert computing_device() in (fresh.dir / "log.txt").read_text()
    # a run begun before runs recorded their machine, resumed here: its earlier sessions are not known
    begun = Run(Spec("world", {"test": "begun"}), tmp_path).create()
    begun.log("started", echo=False)  # a session before the record: its files need not be checkpoints
    resumed = cached(begun.spec, Resources(tmp_path))
    assert resumed.metrics["computed_on"] == ["not recorded", computing_device()]
    assert (resumed.dir / DEVICES_FILE).read_text().splitlines() == resumed.metrics["computed_on"]


def test_a_fine_tune_starts_from_a_finished_run_with_a_fresh_head(fixture_config):
    cfg, runs = fixture_config
    train_student(cfg, runs)
    source = student_spec(cfg)
    tuned_cfg = with_changes(cfg, {"train.init": {"run": source.hash[:8], "reset_head": NUM_CLASSES},
                                   "train.lr": 0.01})
    tuned = student_spec(tuned_cfg, runs)
    assert source in tuned.dependencies()
    metrics = train_student(tuned_cfg, runs)
    assert 0 <= metrics["imagenet_top1"] <= 100
    before = torch.load(Run(source, runs).dir / "model.pt", weights_only=True)["state_dict"]
    after = torch.load(Run(tuned, runs).dir / "model.pt", weights_only=True)["state_dict"]
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    with pytest.raises(FileNotFoundError, match="no train run matches"):
        student_spec(with_changes(cfg, {"train.init": {"run": "feedbeef", "reset_head": 3}}), runs)


class MultiHotBCE(Objective):
    """A multi-label objective defined outside the library: each label and the next class, with BCE."""
    mode = "test_multihot_bce"

    def targets(self, batch, labels):
        return ((one_hot(labels, self.num_classes) + one_hot((labels + 1) % self.num_classes, self.num_classes)) > 0
                ).float()

    def criterion(self):
        return torch.nn.BCEWithLogitsLoss()


def test_a_new_objective_needs_no_change_to_the_trainer_or_pipeline(fixture_config, monkeypatch):
    cfg, runs = fixture_config
    monkeypatch.setitem(OBJECTIVES, MultiHotBCE.mode, MultiHotBCE)
    bce = with_changes(cfg, {"supervision.mode": MultiHotBCE.mode})
    metrics = train_student(bce, runs)
    assert student_spec(bce)["objective"] == {"mode": MultiHotBCE.mode, "cutmix": False}
    assert metrics["final_train_loss"] < 1.0  # a BCE over 12 classes, not a cross-entropy near log(12)


def test_plan_lists_every_run_and_computes_nothing(tmp_path, capsys):
    assert main(["table3", "--profile", "smoke", "--plan", "--runs", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    kinds = [line.split()[0] for line in lines[2:]]
    assert kinds.count("train") == 4 and kinds.count("annotator") == 1 and kinds.count("world") == 1
    assert all("to run" in line for line in lines[2:])
    assert not any(tmp_path.iterdir())
    # Table 6: each storage variant is a distinct label-map run
    assert main(["table6", "--profile", "smoke", "--plan", "--runs", str(tmp_path)]) == 0
    table6 = [line for line in capsys.readouterr().out.splitlines() if line.startswith("labelmaps")]
    assert len(set(table6)) == len(table6) == 7  # the annotator's pass and six derived variants


def test_the_plan_of_all_counts_each_shared_run_once(tmp_path, capsys):
    assert main(["all", "--profile", "smoke", "--plan", "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    listed = sum(int(line.split(": ")[1].split()[0]) for line in out if line.endswith(" cached") and "): " in line)
    total = out[-1]
    assert total.startswith("in all: ") and "0 cached" in total and "world 1)" in total
    distinct = int(total.split()[2])
    assert distinct == len({line.split()[1] for line in out[:-1] if " to run " in line}) < listed
    assert not any(tmp_path.iterdir())
    # a cached run counts with the compute time it recorded: what a fresh cache would spend on it
    world = world_spec(profile_config("smoke"))
    run = Run(world, tmp_path)
    run.dir.mkdir(parents=True)
    run.finish({"wall_seconds_last_session": 5400.0})
    assert plan_total([world], tmp_path) == "in all: 1 distinct runs, 1 cached (recorded compute time 1.5 h), 0 to run"


def test_rows_restrict_a_training_table_to_some_settings(tmp_path, capsys):
    argv = ["table6", "--profile", "smoke", "--plan", "--runs", str(tmp_path)]
    assert main([*argv, "--rows", "relabel_fp32_top5,relabel_compact_top5"]) == 0
    trains = [line for line in capsys.readouterr().out.splitlines() if line.startswith("train")]
    assert len(trains) == 2  # one seed of each of the two rows
    assert main([*argv, "--rows", "relabel_fp8_top5"]) == 2
    error = capsys.readouterr().err
    assert "--rows relabel_fp8_top5" in error and "relabel_compact_top5" in error and error.count("\n") == 1


def test_rows_keep_the_other_rows_of_the_results_folder():
    import pandas as pd

    from repro.experiment import with_other_rows

    def rows(*settings, value):
        return pd.DataFrame([{"model": "resnet50", "setting": s, "seed": 0, "metric": "imagenet_top1", "value": value}
                             for s in settings])

    merged = with_other_rows(rows("compact", value=2.0), rows("baseline", "compact", value=1.0), ("compact",))
    assert sorted(zip(merged["setting"], merged["value"])) == [("baseline", 1.0), ("compact", 2.0)]
    assert with_other_rows(rows("compact", value=2.0), None, ("compact",)).equals(rows("compact", value=2.0))


def test_only_cached_reads_finished_runs_and_computes_nothing(fixture_config):
    from repro.pipeline import resources
    from repro.runs import RunNotCached, cached, only_cached

    cfg, runs = fixture_config
    spec = student_spec(cfg, runs)
    with only_cached(), pytest.raises(RunNotCached, match=Run(spec, runs).hash):
        cached(spec, resources(cfg, runs))
    assert not Run(spec, runs).dir.exists()  # not even its folder
    train_student(cfg, runs)
    with only_cached():
        assert cached(spec, resources(cfg, runs)).done


def _plan_runs(argv, capsys) -> list[str]:
    assert main(argv) == 0
    return [line for line in capsys.readouterr().out.splitlines() if line.split(" ")[0] in
            ("world", "annotator", "labelmaps", "train", "eval", "released")]


def test_released_maps_give_distinct_runs_for_table6_and_figure4(imagenet, labelmaps, tmp_path, capsys):
    from repro.labelmaps.convert import packed_to_official

    official = packed_to_official(labelmaps, tmp_path / "official")  # the fixture keeps top-3
    common = ["--profile", "paper", "--plan", "--runs", str(tmp_path / "runs"), "--set",
              f"data.root={imagenet.root}", "--set", f"labelmap.official_dir={official}"]
    table6 = _plan_runs(["table6", *common], capsys)
    students = [line for line in table6 if line.startswith("train")]
    assert len(students) == len(set(students)) == 8  # the baseline and seven storage variants
    # top-1 derives from the released maps and top-3 is them as they are; top-5 (four dtypes, derived) and top-10
    # (as it is) come from one annotator pass
    assert sum(line.startswith("labelmaps") for line in table6) == 1 + 4 + 1
    assert sum(line.startswith("released") for line in table6) == 1  # the seven variants: six runs and the maps
    figure4 = _plan_runs(["figure4", *common], capsys)
    assert len({line for line in figure4 if line.startswith("train")}) == 8  # seven annotators and the original
    # maps repaired in place are new content: a new run
    assert main(["table3", *common]) == 2  # a user error: one line, status 2
    assert "stored maps keep 3 classes per cell" in capsys.readouterr().err
    common += ["--set", "labelmap.topk=3"]
    before = set(_plan_runs(["table3", *common], capsys))
    next(official.rglob("*.pt")).touch()
    from repro.specs import _tree_digest
    _tree_digest.cache_clear()
    assert set(_plan_runs(["table3", *common], capsys)) != before
