"""`--submit slurm|local`: an experiment's runs as cluster jobs through submitit (the `cluster` extra).

One job per run of the plan that is not cached yet, inputs first. A job computes its one run with
`repro.runs.cached`, so the run cache's lock keeps two jobs off one run, and a job that needs a run another job is
computing waits for it and reuses it. On Slurm a job is also held (`afterok`) until the jobs of its inputs have
succeeded, so it does not sit on its GPUs waiting for a lock. Once every job has ended, the experiment is
tabulated here from the cache, as without `--submit`.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import shlex
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from repro.plan import with_inputs
from repro.runs import Resources, Run, cached
from repro.specs import Spec

TRAINING_KINDS = ("train", "annotator", "detector")  # one task per GPU, on every node; other kinds run as one task
LOG_FOLDER = "submitit"  # under the run cache: <runs>/submitit/<job id>/
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # local jobs run to their end (the local executor's own default is 2 minutes)
POLL_SECONDS = {"local": 1.0, "slurm": 30.0}
REQUEUE_WAIT_SECONDS = 120  # the requeue ends every task within submitit's 90 s notice
MAX_TIMEOUT_REQUEUES = 30  # a job's requeues at its time limit (submitit's default, 3, is 4 days at 24 h)
# JobOptions field -> its flag, read into args.slurm_<field>: the options that only a Slurm submission reads
SLURM_FLAGS = {"partition": "--slurm-partition", "gpus_per_node": "--slurm-gpus-per-node", "nodes": "--slurm-nodes",
               "time_min": "--slurm-time", "cpus_per_task": "--slurm-cpus-per-task", "mem_gb": "--slurm-mem-gb",
               "account": "--slurm-account"}


class SubmitError(ValueError):
    """A bad --submit / --slurm-* option: printed as one `error:` line, exit status 2."""


@dataclass(frozen=True)
class JobOptions:
    cluster: str                 # "slurm" or "local"
    wait: bool
    gpus_per_node: int = 1
    nodes: int = 1
    time_min: int = 24 * 60
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    partition: str | None = None
    account: str | None = None


def job_options(args: argparse.Namespace) -> JobOptions | None:
    """The submission the command line asks for (None: none), or a SubmitError naming the option at fault."""
    values = {field: getattr(args, f"slurm_{field}") for field in SLURM_FLAGS
              if getattr(args, f"slurm_{field}") is not None}
    given = [SLURM_FLAGS[field] for field in values]
    if args.submit is None:
        if given:
            raise SubmitError(f"{given[0]} only acts with --submit slurm: add --submit slurm, or drop {given[0]}")
        if args.submit_no_wait:
            raise SubmitError("--submit-no-wait only acts with --submit slurm|local: add --submit, or drop it")
        return None
    if args.plan:
        raise SubmitError("--plan lists the runs and --submit computes them: give one of the two")
    if args.submit == "local" and given:
        raise SubmitError(f"{given[0]} is for --submit slurm; --submit local runs each job as a process on this "
                          "machine: drop it, or use --submit slurm")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise SubmitError(f"--submit {args.submit} needs submitit: pip install -e '.[cluster]'") from None
    missing = [command for command in ("sbatch", "srun") if shutil.which(command) is None]
    if args.submit == "slurm" and missing:
        raise SubmitError(f"--submit slurm: {' and '.join(missing)} not on PATH: submit from a Slurm login node, "
                          "or use --submit local to run the jobs on this machine")
    for field, least in (("gpus_per_node", 0), ("nodes", 1), ("time_min", 1), ("cpus_per_task", 1)):
        if values.get(field, least) < least:
            raise SubmitError(f"{SLURM_FLAGS[field]} must be at least {least}, got {values[field]}")
    if values.get("mem_gb", 1) <= 0:
        raise SubmitError(f"--slurm-mem-gb must be positive, got {values['mem_gb']}")
    return JobOptions(cluster=args.submit, wait=not args.submit_no_wait, **values)


def job_parameters(spec: Spec, options: JobOptions, after: list[str]) -> dict:
    """submitit's parameters for the job of `spec`, held until the jobs `after` have succeeded (Slurm)."""
    name = f"repro-{spec.kind}-{spec.hash[:8]}"
    if options.cluster == "local":
        import torch

        return {"name": name, "timeout_min": LOCAL_TIMEOUT_MIN, "gpus_per_node": int(torch.cuda.is_available())}
    training = spec.kind in TRAINING_KINDS
    gpus = options.gpus_per_node
    parameters = {"name": name, "timeout_min": options.time_min, "nodes": options.nodes if training else 1,
                  "tasks_per_node": max(gpus, 1) if training else 1, "gpus_per_node": gpus if training else min(gpus, 1)}
    if options.cpus_per_task is not None:
        parameters["cpus_per_task"] = options.cpus_per_task
    if options.mem_gb is not None:
        parameters["mem_gb"] = options.mem_gb
    if options.partition is not None:
        parameters["slurm_partition"] = options.partition
    if options.account is not None:
        parameters["slurm_account"] = options.account
    if after:
        # a failed input cancels the jobs that need it instead of leaving them pending forever
        parameters.update(slurm_dependency="afterok:" + ":".join(after),
                          slurm_additional_parameters={"kill-on-invalid-dep": "yes"})
    return parameters


class ComputeRun:
    """A job's work: the run of one spec, computed (or found done) in the run cache; returns its folder.

    A job of several tasks trains one run in one process group: its inputs are made sure of first, each by one
    process under its lock (the non-training steps are not distributed), then every task joins the group with
    torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), which the trainer reads.

    A job past its time limit goes on as the same job: submitit signals it (SIGUSR2) 90 s before the limit, the
    trainer writes its checkpoint and stops, and the signal is then handed back to submitit, which requeues the job
    under its id (`checkpoint`: the same arguments), so the jobs that need its run stay queued instead of being
    cancelled; the requeued job resumes from the checkpoint."""

    def __call__(self, spec_json: dict, resource_fields: dict, code: str | None = None) -> str:
        import submitit

        from repro import steps  # noqa: F401  (registers each kind's compute)
        from repro.preemption import CLUSTER_NOTICE, Preempted

        if code is not None and code != (now := code_digest()):
            raise ValueError(f"the suite's code changed since this job was submitted (sources {code} then, {now} "
                             "now: a git pull or an edit): check out the code it was submitted with, or rerun the "
                             "command to submit the current code (a run begun under the former resumes under it)")

        # submitit's job process ignores SIGTERM, and forked workers inherit that: a process pool (the world's
        # drawing) stops its workers with SIGTERM and would wait for them forever
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        spec = Spec.from_json(spec_json)
        resources = Resources(**{**resource_fields, "runs_root": Path(resource_fields["runs_root"])})
        if submitit.JobEnvironment().num_tasks > 1:
            for dependency in with_inputs(spec.dependencies()):
                cached(dependency, resources)
            # every task sees all GPUs of its node and takes cuda:LOCAL_RANK (repro.train.distributed)
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        try:
            return str(cached(spec, resources).dir)
        except Preempted as stopped:
            if stopped.signal_name != CLUSTER_NOTICE.name:
                raise
            # the trainer's handler took submitit's notice: now that the checkpoint is written, submitit's own
            # (restored) handler requeues the job and exits on rank 0; other ranks end with the job
            signal.raise_signal(CLUSTER_NOTICE)
            time.sleep(REQUEUE_WAIT_SECONDS)
            raise

    def checkpoint(self, *args, **kwargs):
        """submitit's requeue: this job again with the same arguments (the run's checkpoint holds its state)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


compute_run = ComputeRun()


def code_digest() -> str:
    """A digest of the suite's sources and data files (the library and the experiment packages). A job checks it against
    the one it was submitted with: the install is editable, so a job starting days later would otherwise run
    whatever is checked out then, under the same run hashes."""
    import importlib

    from repro.experiment import EXPERIMENT_PACKAGES

    digest = hashlib.sha256()
    for package in ("repro", *EXPERIMENT_PACKAGES):  # rglob does not enter repro's links to the experiment folders
        folder = Path(importlib.import_module(package).__path__[0])
        # the code and the files it reads (the world's glyph list, ImageNet-9's classes, the paper's numbers)
        for path in sorted(path for path in folder.rglob("*") if path.is_file() and "__pycache__" not in path.parts):
            digest.update(f"{package}/{path.relative_to(folder)}\n".encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def resource_fields(resources: Resources) -> dict:
    """`Resources` as the JSON values a job receives (compute_run rebuilds them)."""
    return {**dataclasses.asdict(resources), "runs_root": str(resources.runs_root)}


def _error_line(error: Exception) -> str:
    """The last line of a job's traceback (submitit wraps it in its own text), or the error's first line."""
    lines = [line.strip() for line in str(error).splitlines()]
    trace_end = [i for i, line in enumerate(lines) if line.startswith("-----")]
    if len(trace_end) >= 2:
        trace = [line for line in lines[trace_end[0] + 1:trace_end[-1]] if line]
        if trace:
            return trace[-1]
    return next((line for line in lines if line), type(error).__name__)


def tabulate_command(args: argparse.Namespace) -> str:
    """The command that tabulates the experiment here once its jobs have computed every run."""
    words = ["python", "-m", "repro", getattr(args, "experiment", "all"), "--profile", args.profile,
             "--seeds", str(args.seeds), "--runs", str(args.runs), "--results", str(args.results)]
    for item in args.overrides:
        words += ["--set", item]
    if getattr(args, "rows", ()):
        words += ["--rows", ",".join(args.rows)]
    return shlex.join(words)


def submit(specs: list[Spec], options: JobOptions, resources: Resources) -> list[tuple[Spec, object]]:
    """One job per spec, in the order given (inputs first), each held on Slurm until its inputs' jobs succeed."""
    import submitit

    folder = resources.runs_root / LOG_FOLDER / "%j"
    fields = resource_fields(resources)
    code = code_digest()
    jobs: dict[str, object] = {}
    for spec in specs:
        after = [jobs[dependency.hash].job_id for dependency in spec.dependencies() if dependency.hash in jobs]
        executor = submitit.AutoExecutor(folder=folder, cluster=options.cluster,
                                         slurm_max_num_timeout=MAX_TIMEOUT_REQUEUES)
        parameters = job_parameters(spec, options, after)
        executor.update_parameters(**parameters)
        job = executor.submit(compute_run, spec.as_json(), fields, code)
        jobs[spec.hash] = job
        shape = "" if options.cluster == "local" else (
            f", {parameters['nodes']} node(s) x {parameters['tasks_per_node']} task(s), "
            f"{parameters['gpus_per_node']} GPU(s) per node" + (f", after {', '.join(after)}" if after else ""))
        print(f"submitted job {job.job_id}: {spec.kind} {spec.hash}{shape}", flush=True)
    return [(spec, jobs[spec.hash]) for spec in specs]


def wait(submitted: list[tuple[Spec, object]], cluster: str) -> int:
    """Waits for every job, one line per job as it ends; returns how many failed."""
    from submitit.helpers import as_completed

    spec_of = {job.job_id: spec for spec, job in submitted}
    started = time.time()
    failed = 0
    for count, job in enumerate(as_completed([job for _, job in submitted], poll_frequency=POLL_SECONDS[cluster]), 1):
        spec = spec_of[job.job_id]
        error = job.exception()
        head = f"[{count}/{len(submitted)}] job {job.job_id} {spec.kind} {spec.hash}"
        if error is None:
            print(f"{head} done after {time.time() - started:.0f}s; log {job.paths.stderr}", flush=True)
        else:
            failed += 1
            print(f"{head} FAILED: {_error_line(error)}; log {job.paths.stderr}", file=sys.stderr, flush=True)
    return failed


def launch(args: argparse.Namespace, experiments: list, ctx) -> int | None:
    """`--submit`: the runs that `experiments` need and the cache lacks, one job each. Returns the exit status to
    stop with, or None to go on and run the experiments here (no --submit, or every run is computed)."""
    from repro.pipeline import resources as config_resources

    try:
        options = job_options(args)
    except SubmitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if options is None:
        return None
    from repro.experiment import check_experiments

    # the pre-flight check before any job is queued; the specs are what run_experiment computes after the jobs:
    # the claim seeds too, so that no run is left to train here
    planned = check_experiments(experiments, ctx)
    resources = config_resources(ctx.config, Path(ctx.runs_root).resolve())
    needed = with_inputs(planned)
    to_run = [spec for spec in needed if not Run(spec, resources.runs_root).done]
    if options.cluster == "slurm":  # what the jobs to queue would meet on their nodes (cached runs need no job)
        from repro.preflight import check_cluster_jobs

        if problems := check_cluster_jobs(to_run, options.nodes * max(options.gpus_per_node, 1),
                                          options.gpus_per_node > 0):
            print("\n".join(map(str, problems)), file=sys.stderr)
            return 2
    print(f"{len(to_run)} run(s) to compute of {len(needed)}; jobs' logs in "
          f"{resources.runs_root / LOG_FOLDER}/<job id>/", flush=True)
    if not to_run:
        return None
    submitted = submit(to_run, options, resources)
    if not options.wait:
        print(f"submitted {len(submitted)} job(s): {' '.join(str(job.job_id) for _, job in submitted)}\n"
              f"once they have ended, tabulate with: {tabulate_command(args)}")
        return 0
    failed = wait(submitted, options.cluster)
    if failed:
        print(f"error: {failed} of {len(submitted)} job(s) failed (their logs are named above): fix the cause and "
              "rerun the same command; the runs that finished are kept", file=sys.stderr)
        return 2
    return None
