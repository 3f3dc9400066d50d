"""Cluster launch (`--submit`, repro.cluster) through submitit's local executor and a stand-in `sbatch`, and the
Makefile's NPROC / SET."""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from repro.cli import build_parser, main, make_context
from repro.cluster import resource_fields
from repro.experiment import discover
from repro.pipeline import resources as config_resources
from repro.pipeline import student_spec
from repro.plan import with_inputs
from repro.runs import Run
from tests.fixtures import TINY_MODEL, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _make_commands(*variables: str) -> list[str]:
    """The suite commands `make -n paper table3` would run (the environment taken as installed)."""
    out = subprocess.run(["make", "-s", "-n", "-C", str(ROOT), "-o", ".venv/.installed", "paper", "table3",
                          *variables], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if " -m repro " in line]


def test_make_passes_nproc_to_torchrun_and_each_word_of_set_as_a_set_option():
    assert _make_commands() == [
        ".venv/bin/python -m repro check all --profile proxy --processes 1",
        ".venv/bin/python -m repro all --profile proxy --seeds 3 --plan",
        ".venv/bin/python -m repro all --profile proxy --seeds 3",
        ".venv/bin/python -m repro report --profile proxy --readme README.md",
        ".venv/bin/python -m repro compare --profile proxy",
        ".venv/bin/python -m repro table3 --profile proxy --seeds 1",
    ]
    sets = "--set train.epochs=2 --set data.root=/x"
    torchrun = ".venv/bin/torchrun --standalone --nproc_per_node 8 -m repro"
    assert _make_commands("PROFILE=paper", "NPROC=8", "SET=train.epochs=2 data.root=/x") == [
        f".venv/bin/python -m repro check all --profile paper --processes 8 {sets}",
        f".venv/bin/python -m repro all --profile paper --seeds 1 {sets} --plan",
        f"{torchrun} all --profile paper --seeds 1 {sets}",
        ".venv/bin/python -m repro report --profile paper",
        ".venv/bin/python -m repro compare --profile paper",
        f"{torchrun} table3 --profile paper --seeds 1 {sets}",
    ]


def _table3(tmp_path) -> list[str]:
    """Table 3 at the smoke profile with tiny models: a world, an annotator, its label maps and four students,
    two of which read the maps."""
    model = json.dumps(TINY_MODEL)
    return ["table3", "--profile", "smoke", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
            "--set", f"train.model={model}", "--set", f"annotator.model={model}"]


@pytest.mark.parametrize("options, message", [
    (["--slurm-nodes", "2"], "error: --slurm-nodes only acts with --submit slurm"),
    (["--submit-no-wait"], "error: --submit-no-wait only acts with --submit"),
    (["--submit", "local", "--slurm-gpus-per-node", "2"], "error: --slurm-gpus-per-node is for --submit slurm"),
    (["--submit", "local", "--plan"], "error: --plan lists the runs and --submit computes them"),
    (["--submit", "slurm"], "error: --submit slurm: sbatch and srun not on PATH"),
])
def test_a_bad_submit_option_is_a_one_line_error(options, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no Slurm here
    assert main(_table3(tmp_path) + options) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_submit_without_submitit_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    assert main(_table3(tmp_path) + ["--submit", "local"]) == 2
    assert capsys.readouterr().err == "error: --submit local needs submitit: pip install -e '.[cluster]'\n"


def _planned_specs(argv) -> list:
    """The specs of every run the command's experiment needs, inputs first (what `--plan` lists)."""
    experiments = discover()
    args = build_parser(experiments).parse_args(argv)
    return with_inputs(experiments[args.experiment].plan(make_context(args)))


def test_submit_sends_the_runs_of_the_claim_seeds_too(tmp_path, monkeypatch):
    """Table 3 at proxy runs 5 seeds where 3 are asked (claim_seeds): jobs for all of them, none left to train
    in the tabulating process."""
    import types

    import repro.cluster

    sent = []
    monkeypatch.setattr(repro.cluster, "job_options", lambda args: types.SimpleNamespace(cluster="local", wait=False))
    monkeypatch.setattr(repro.cluster, "submit", lambda runs, options, resources: sent.extend(runs) or [])
    assert main(["table3", "--profile", "proxy", "--seeds", "3", "--runs", str(tmp_path / "runs"), "--results",
                 str(tmp_path / "results"), "--submit", "local"]) == 0
    assert {spec["seed"] for spec in sent if spec.kind == "train"} == {0, 1, 2, 3, 4}


def test_submit_checks_the_inputs_before_queueing_any_job(tmp_path, monkeypatch, capsys):
    """A missing input is found in seconds, not by every job failing after its wait in the queue."""
    import types

    import repro.cluster

    sent = []
    monkeypatch.setattr(repro.cluster, "job_options", lambda args: types.SimpleNamespace(cluster="local", wait=False))
    monkeypatch.setattr(repro.cluster, "submit", lambda runs, options, resources: sent.extend(runs) or [])
    assert main(["table3", "--profile", "paper", "--set", f"data.root={tmp_path / 'nowhere'}", "--runs",
                 str(tmp_path / "runs"), "--results", str(tmp_path / "results"), "--submit", "local"]) == 2
    assert "has no train/ folder" in capsys.readouterr().err and sent == []


def _stand_in_slurm(tmp_path, monkeypatch):
    """sbatch stand-in: job ids 101, 102, ... (submitit parses "Submitted batch job N"); srun is only looked for."""
    pytest.importorskip("submitit", reason="the cluster extra is not installed: pip install -e '.[cluster]'")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\nn=$(cat {bin_dir}/count 2>/dev/null || echo 100)\n'
                                    f'n=$((n + 1)); echo $n > {bin_dir}/count; echo "Submitted batch job $n"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


def test_slurm_jobs_one_per_run_training_on_every_gpu_held_until_their_inputs_succeed(tmp_path, monkeypatch,
                                                                                     capsys):
    _stand_in_slurm(tmp_path, monkeypatch)
    argv = _table3(tmp_path)
    specs = _planned_specs(argv)
    assert main(argv + ["--submit", "slurm", "--submit-no-wait", "--slurm-gpus-per-node", "4", "--slurm-nodes", "2",
                        "--slurm-partition", "gpu", "--slurm-time", "90"]) == 0
    out = capsys.readouterr().out
    submitted = re.findall(r"submitted job (\d+): (\w+) (\w+)", out)
    assert [(kind, run_hash) for _, kind, run_hash in submitted] == [(s.kind, s.hash) for s in specs]  # plan order
    job_of = {run_hash: job for job, _, run_hash in submitted}
    assert f"tabulate with: python -m repro table3 --profile smoke --seeds 1 --runs {tmp_path / 'runs'}" in out
    for (job, kind, run_hash), spec in zip(submitted, specs):
        script = (tmp_path / "runs" / "submitit" / job / f"{job}_submission.sh").read_text()
        flags = dict(re.findall(r"#SBATCH --([\w-]+)=(\S+)", script))
        training = kind in ("train", "annotator")
        assert (flags["nodes"], flags["ntasks-per-node"], flags["gpus-per-node"]) == (
            ("2", "4", "4") if training else ("1", "1", "1"))
        assert (flags["partition"], flags["time"]) == ("gpu", "90")
        inputs = [job_of[dependency.hash] for dependency in spec.dependencies()]
        assert flags.get("dependency") == ("afterok:" + ":".join(inputs) if inputs else None)


@pytest.mark.slow
def test_submit_local_computes_each_run_once_in_its_own_job_then_tabulates(tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit", reason="the cluster extra is not installed: pip install -e '.[cluster]'")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the local executor starts every job at once on this small machine
    argv = _table3(tmp_path)
    specs = _planned_specs(argv)
    assert main(argv + ["--submit", "local"]) == 0
    out = capsys.readouterr().out
    submitted = re.findall(r"submitted job (\d+): (\w+) (\w+)", out)
    assert [(kind, run_hash) for _, kind, run_hash in submitted] == [(s.kind, s.hash) for s in specs]
    assert len(re.findall(r"\] job \d+ \w+ \w+ done after", out)) == len(specs)
    for spec in specs:  # the jobs sharing an input waited on its lock: each run was computed once
        run_dir = tmp_path / "runs" / spec.kind / spec.hash
        log = (run_dir / "log.txt").read_text()
        assert log.count("started") == 1 and "resuming" not in log and (run_dir / "metrics.json").exists()
    assert (tmp_path / "results" / "smoke" / "table3.csv").exists()
    # everything is cached now: nothing to submit, the table is written again from the cache
    (tmp_path / "results" / "smoke" / "table3.csv").unlink()
    assert main(argv + ["--submit", "local"]) == 0
    out = capsys.readouterr().out
    assert f"0 run(s) to compute of {len(specs)}" in out and "submitted job" not in out
    assert (tmp_path / "results" / "smoke" / "table3.csv").exists()


def _compute_and_report(spec_json, resource_fields):
    """compute_run, then what the task saw: its rank and the size of its process group."""
    import torch.distributed

    from repro.cluster import compute_run

    run_dir = compute_run(spec_json, resource_fields)
    return {"run": run_dir, "rank": int(os.environ["RANK"]), "group": torch.distributed.get_world_size()}


@pytest.mark.slow
def test_a_training_job_of_two_tasks_trains_its_run_in_one_process_group(imagenet, tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit", reason="the cluster extra is not installed: pip install -e '.[cluster]'")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    import cloudpickle  # the job unpickles _compute_and_report: pytest's name for this module is not importable there

    cfg = tiny_config(**{"data.source": "imagenet", "data.root": str(imagenet.root), "supervision.mode": "original"})
    spec = student_spec(cfg)
    resources = config_resources(cfg, tmp_path / "runs")
    executor = submitit.AutoExecutor(folder=tmp_path / "runs" / "submitit" / "%j", cluster="local")
    executor.update_parameters(tasks_per_node=2, timeout_min=10)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        job = executor.submit(_compute_and_report, spec.as_json(), resource_fields(resources))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    tasks = job.results()
    assert sorted(task["rank"] for task in tasks) == [0, 1] and [task["group"] for task in tasks] == [2, 2]
    run = Run(spec, resources.runs_root)
    assert {task["run"] for task in tasks} == {str(run.dir)} and run.done
    assert (run.dir / "log.txt").read_text().count("started") == 1


def test_a_batch_that_does_not_split_over_a_slurm_jobs_tasks_stops_before_any_job_is_queued(tmp_path, monkeypatch,
                                                                                          capsys):
    """The login node runs one process: the check reads the jobs' task count (nodes x GPUs per node) instead."""
    _stand_in_slurm(tmp_path, monkeypatch)
    argv = _table3(tmp_path) + ["--submit", "slurm", "--submit-no-wait", "--slurm-gpus-per-node", "3"]
    assert main(argv) == 2  # the smoke profile's batch of 8 over 3 tasks
    captured = capsys.readouterr()
    assert "problem: train run " in captured.err and "does not split" in captured.err
    assert "submitted job" not in captured.out and not (tmp_path / "bin" / "count").exists()


@pytest.mark.parametrize("notice, handed_on", [("SIGUSR2", True), ("SIGTERM", False)])
def test_a_job_stopped_by_submitits_time_limit_notice_hands_it_back_to_submitit_which_requeues_it(
        tmp_path, monkeypatch, notice, handed_on):
    """submitit signals SIGUSR2 90 s before a job's time limit. The trainer takes it and writes its checkpoint;
    the job then passes it on to submitit's handler, which requeues the job (under its id: the jobs that need its
    run stay queued) with what `checkpoint` returns, this job again."""
    submitit = pytest.importorskip("submitit", reason="the cluster extra is not installed: pip install -e '.[cluster]'")
    from types import SimpleNamespace

    from repro import cluster
    from repro.preemption import Preempted

    def stopped_by_the_notice(spec, resources):
        raise Preempted("checkpoint written in epoch 3 after step 7", signal_name=notice)

    monkeypatch.setattr(cluster, "cached", stopped_by_the_notice)
    monkeypatch.setattr(cluster, "REQUEUE_WAIT_SECONDS", 0)
    monkeypatch.setattr(submitit, "JobEnvironment", lambda: SimpleNamespace(num_tasks=1))
    spec_json = student_spec(tiny_config()).as_json()
    fields = resource_fields(config_resources(tiny_config(), tmp_path / "runs"))
    received = []
    former = {number: signal.getsignal(number) for number in (signal.SIGUSR2, signal.SIGTERM)}
    signal.signal(signal.SIGUSR2, lambda number, frame: received.append(number))  # where submitit's handler is
    try:
        with pytest.raises(Preempted):  # on a rank other than 0 submitit's handler returns, and the task ends
            cluster.compute_run(spec_json, fields)
    finally:
        for number, handler in former.items():
            signal.signal(number, handler)
    assert received == ([signal.SIGUSR2] if handed_on else [])
    again = cluster.compute_run.checkpoint(spec_json, fields)
    assert again.function is cluster.compute_run and again.args == (spec_json, fields)


def test_the_trainer_stops_at_submitits_time_limit_notice():
    import torch
    from types import SimpleNamespace

    from repro.preemption import CheckpointPacer

    env = SimpleNamespace(device=torch.device("cpu"), distributed=False, is_main=True)
    pacer = CheckpointPacer(0, env)
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        assert pacer.poll() == (True, True) and pacer.stopped_by == "SIGUSR2"
    finally:
        pacer.close()
    # a notice after the last step's check (during the final evaluation) is handed on to the former handler
    received = []
    former = signal.signal(signal.SIGUSR2, lambda number, frame: received.append(number))
    try:
        pacer = CheckpointPacer(0, env)
        os.kill(os.getpid(), signal.SIGUSR2)
        assert received == [] and pacer.signal_name == "SIGUSR2"  # caught, and not acted on
        pacer.close()
        assert received == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, former)


def test_a_job_refuses_to_run_other_code_than_it_was_submitted_with(tmp_path, monkeypatch):
    """The install is editable: a git pull between the submission and a job's start would reach the job."""
    submitit = pytest.importorskip("submitit", reason="the cluster extra is not installed: pip install -e '.[cluster]'")
    from types import SimpleNamespace

    from repro import cluster

    computed = []
    monkeypatch.setattr(cluster, "cached", lambda spec, resources: computed.append(spec) or SimpleNamespace(dir="r"))
    monkeypatch.setattr(submitit, "JobEnvironment", lambda: SimpleNamespace(num_tasks=1))
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # compute_run's SIGTERM reset: not in pytest's process
    spec_json = student_spec(tiny_config()).as_json()
    fields = resource_fields(config_resources(tiny_config(), tmp_path / "runs"))
    with pytest.raises(ValueError, match="the suite's code changed since this job was submitted \\(sources "
                                         f"0123456789abcdef then, {cluster.code_digest()} now"):
        cluster.compute_run(spec_json, fields, "0123456789abcdef")
    assert computed == []
    assert cluster.compute_run(spec_json, fields, cluster.code_digest()) == "r" and len(computed) == 1
