"""Wrong inputs are one line on stderr naming the key, value or path, with exit status 2, before any work starts;
REPRO_DEBUG=1 shows the traceback instead."""
import pytest

from repro.cli import main
from repro.config import ConfigError


@pytest.mark.parametrize("args, expected", [
    (["--set", "train.epochs=abc"], "--set train.epochs=\"abc\": expected an integer like the default 1"),
    (["--set", "train.epochs=0"], "--set train.epochs=0: must be at least 1"),
    (["--set", "train.epochz=3"], "config has no key 'train.epochz'"),
    (["--set", "trian.epochs=3"], "config has no section 'trian'"),
    (["--set", "train.amp=yes"], "--set train.amp=\"yes\": expected true or false"),
    (["--set", "train.lr=-0.1"], "--set train.lr=-0.1: must be at least 0"),
    (["--set", "train.scale=0.5"], "--set train.scale=0.5: expected a list"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--set", "train.opt=momentum"], "train.opt=momentum conflicts with train.nesterov=True"),
])
def test_a_wrong_setting_is_one_line_and_status_2_before_any_work(args, expected, tmp_path, capsys):
    status = main(["table3", "--profile", "smoke", "--runs", str(tmp_path / "runs"), *args])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith("error: ") and len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "runs").exists()  # nothing was built


def test_values_of_the_defaults_type_are_accepted(tmp_path, capsys):
    assert main(["table3", "--profile", "smoke", "--plan", "--runs", str(tmp_path), "--set", "train.lr=1",
                 "--set", "train.amp=false", "--set", "train.scale=[0.3, 1.0]",
                 "--set", "annotator.checkpoint=none.pt"]) == 0  # a float takes an int; a None default anything


def test_a_missing_data_root_is_one_line(tmp_path, capsys):
    status = main(["check", "--profile", "paper", "--set", f"data.root={tmp_path / 'nowhere'}", "--runs",
                   str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and all(line.startswith(("problem: ", "absent: ")) for line in err)  # a line per finding
    assert any("has no train/ folder" in line for line in err)


def test_a_train_change_that_a_rows_recipe_overrides_is_noted_with_the_recipes_key(tmp_path, capsys):
    """Only train.lr is set by some rows' recipes; momentum reaches every run, and an added option set to its
    former behaviour (left out of the specs) reaches them too."""
    main(["check", "table4", "--profile", "paper", "--set", f"data.root={tmp_path}", "--runs", str(tmp_path),
          "--set", "train.lr=0.05", "--set", "train.momentum=0.8", "--set", "train.decay_norm_and_bias=false"])
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and notes[0].startswith("note: --set train.lr=0.05 does not reach 10 planned training "
                                                   "runs") and "recipes.efficientnet_b0.lr" in notes[0], notes


@pytest.mark.parametrize("command", [["check", "all"], ["all"]])
def test_every_experiments_missing_inputs_are_listed_at_once_before_any_run(command, tmp_path, capsys):
    """A paper-scale `all` lists every key left to set and every missing input of all the experiments, not the
    first one after days of the tables before it; nothing is built."""
    status = main([*command, "--profile", "paper", "--set", f"data.root={tmp_path / 'nowhere'}", "--runs",
                   str(tmp_path / "runs"), "--results", str(tmp_path / "results")])
    problems = [line for line in capsys.readouterr().err.splitlines() if line.startswith("problem: ")]
    assert status == 2
    assert any(line.startswith("problem: table10: multilabel.annotator.checkpoint is not set") for line in problems)
    assert any(line.startswith(f"problem: figure2: no val boxes file {tmp_path / 'nowhere' / 'LOC_val_solution.csv'}")
               for line in problems)
    assert any(f"data.root {tmp_path / 'nowhere'} has no train/ folder" in line for line in problems)
    assert any("imagenet_c: no folder" in line for line in problems)  # Table 7's sets, after Tables 2-6
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def test_repro_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_DEBUG", "1")
    with pytest.raises(ConfigError, match="train.epochs"):
        main(["table3", "--profile", "smoke", "--runs", str(tmp_path), "--set", "train.epochs=abc"])


def test_all_checks_every_experiments_inputs_once(tmp_path, monkeypatch):
    """`all` runs the pre-flight check once for all the experiments, not again before each (at paper scale each
    check lists ImageNet's 1.28 million training files)."""
    import repro.cli
    import repro.preflight
    from dataclasses import replace

    class Collected(Exception):
        pass

    checks, collected = [], []
    real_preflight = repro.preflight.preflight
    monkeypatch.setattr(repro.preflight, "preflight",
                        lambda specs, processes=None, runs_root=None: checks.append(1)
                        or real_preflight(specs, processes, runs_root))

    def collect(ctx):
        raise Collected  # the experiment reached its computation

    def run_experiment(experiment, ctx, **options):
        try:
            real_run_experiment(experiment, ctx, **options)
        except Collected:
            collected.append((experiment.name, len(checks)))

    real_run_experiment = repro.cli.run_experiment
    monkeypatch.setattr(repro.cli, "run_experiment", run_experiment)
    chosen = {name: replace(experiment, collect=collect)
              for name, experiment in repro.cli.discover().items() if name in ("table3", "tableA1")}
    monkeypatch.setattr(repro.cli, "discover", lambda: chosen)
    assert main(["all", "--profile", "smoke", "--runs", str(tmp_path / "runs"),
                 "--results", str(tmp_path / "results")]) == 0
    assert collected == [("table3", 1), ("tableA1", 1)]  # both computed after the one check


def test_a_batch_that_does_not_split_over_the_jobs_processes_is_a_problem_before_any_run(tmp_path, monkeypatch,
                                                                                         capsys):
    """Under torchrun every planned global batch must split over the processes: at 3 processes smoke's batch of 8
    fails in the pre-flight check, not when its run starts after the runs before it."""
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert main(["check", "table3", "--profile", "smoke", "--runs", str(tmp_path / "runs")]) == 2
    problems = [line for line in capsys.readouterr().err.splitlines() if line.startswith("problem: ")]
    assert any("batch_size 8 does not split into 3 devices x 1 accumulation steps" in line for line in problems)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["check", "table3", "--profile", "smoke", "--runs", str(tmp_path / "runs")]) == 0


def test_a_gpu_out_of_memory_is_one_line_naming_the_keys_to_change(tmp_path, monkeypatch, capsys):
    import torch

    import repro.cli

    def out_of_memory(args, experiments):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(repro.cli, "_run_one", out_of_memory)
    status = main(["table3", "--profile", "smoke", "--runs", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and err.startswith("error: a GPU ran out of memory: ")
    assert "resources.batch_size_eval" in err and "train.accum_steps" in err
