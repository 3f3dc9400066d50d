"""The content-addressed run cache.

A run is computed from a frozen `Spec` (repro.specs); its hash names `<runs>/<kind>/<hash>/`, which holds
`spec.json`, `log.txt`, `computed_on.txt` (the kind of machine of each session that computed it), the run's own
files (checkpoints, data) and, once it has finished, `metrics.json`. Any
experiment asking for the same spec gets the finished run back; an interrupted one is handed to its kind's
compute function again, which resumes from what it left in the directory. A compute function receives the spec
and `Resources` only: what a run may use without changing its result (workers, eval batch size, the cache).
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch.distributed

from repro import progress
from repro.atomic import remove_stale_temporaries, write_json_atomic, write_text_atomic
from repro.environment import computing_device
from repro.specs import Spec, canonical_json

METRICS = "metrics.json"
SPEC_FILE = "spec.json"
DEVICES_FILE = "computed_on.txt"


@dataclass(frozen=True)
class Resources:
    """What a run may use that cannot change its result: never part of a spec."""
    runs_root: Path
    workers: int = 0
    batch_size_eval: int = 256
    checkpoint_minutes: float = 30.0  # a training run's mid-epoch checkpoints (bit-identical resume: no result)


# kind -> compute(spec, run, resources) -> metrics; filled by repro.steps
COMPUTE: dict[str, Callable[[Spec, "Run", Resources], Mapping]] = {}
# kind -> whether a run of it is split over the ranks of a torchrun job (see `cached`)
SPLIT_OVER_RANKS: dict[str, Callable[[Spec], bool]] = {}


def computes(kind: str, split_over_ranks: Callable[[Spec], bool] | None = None):
    """Registers the function that computes the runs of `kind`; under torchrun, the runs for which
    `split_over_ranks` is true are computed by every rank, each its share, which rank 0 joins and records."""
    def register(function):
        COMPUTE[kind] = function
        if split_over_ranks is not None:
            SPLIT_OVER_RANKS[kind] = split_over_ranks
        return function
    return register


class Run:
    def __init__(self, spec: Spec, runs_root: str | os.PathLike):
        self.spec = spec
        self.kind = spec.kind
        self.hash = spec.hash
        self.dir = Path(runs_root) / spec.kind / spec.hash

    def create(self) -> "Run":
        """Make the run's folder and record its spec (a different spec under the same hash is refused)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        spec_file = self.dir / SPEC_FILE
        if spec_file.exists():
            stored = json.loads(spec_file.read_text())
            if canonical_json(stored) != canonical_json(self.spec.as_json()):
                raise RuntimeError(f"{spec_file} holds a different spec for hash {self.hash}")
        else:
            write_json_atomic(spec_file, self.spec.as_json())
        return self

    @property
    def done(self) -> bool:
        return (self.dir / METRICS).exists()

    @property
    def metrics(self) -> dict:
        return json.loads((self.dir / METRICS).read_text())

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "checkpoint.pt"

    def log(self, message: str, echo: bool = True) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        with open(self.dir / "log.txt", "a") as f:
            f.write(line + "\n")
        if echo:
            print(f"[{self.kind} {self.hash[:8]}] {message}", file=sys.stderr, flush=True)

    def finish(self, metrics: Mapping) -> dict:
        write_json_atomic(self.dir / METRICS, dict(metrics))
        return dict(metrics)

    @contextmanager
    def lock(self):
        """Held while the run computes, so two processes never write the same run at once."""
        with open(self.dir / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def __repr__(self) -> str:
        return f"Run({self.kind}, {self.dir})"


def stored_spec(kind: str, run_hash: str, runs_root: str | os.PathLike) -> Spec:
    """The spec of the run `<runs_root>/<kind>/<run_hash>` (a full hash or a unique prefix of one)."""
    matches = sorted((Path(runs_root) / kind).glob(f"{run_hash}*/{SPEC_FILE}"))
    if len(matches) != 1:
        state = "no" if not matches else f"{len(matches)}"
        raise FileNotFoundError(f"{state} {kind} run matches {run_hash!r} under {Path(runs_root) / kind}: give "
                                "the hash of a run in this cache (python -m repro EXP --plan lists them)")
    return Spec.from_json(json.loads(matches[0].read_text()))


# kinds computed by every rank of a torchrun job together (DDP training, sharded evaluation); an annotator's
# label-map pass by every rank, each its share of the images (SPLIT_OVER_RANKS); the others (the world, variants
# of stored maps) by rank 0 alone while the other ranks wait for its metrics.json
DISTRIBUTED_KINDS = ("annotator", "train", "eval", "detector")
WAIT_SECONDS = 5.0


class RunNotCached(LookupError):
    """A run that `only_cached()` forbade computing."""


_ONLY_CACHED = [False]


@contextmanager
def only_cached():
    """Inside it, `cached` returns finished runs and raises RunNotCached for any other: code that may read runs
    outside an experiment's plan (a table's report under --rows) reads what is there and computes nothing."""
    before, _ONLY_CACHED[0] = _ONLY_CACHED[0], True
    try:
        yield
    finally:
        _ONLY_CACHED[0] = before


def cached(spec: Spec, resources: Resources) -> Run:
    """The finished run of `spec`: reused if done, else computed (resuming whatever it left before).

    The runs it needs are made first (under torchrun by all ranks in the same order); then a training or
    evaluation run is computed by every rank together, rank 0 alone taking the lock and writing the run's files,
    and any other run by rank 0 alone while the others wait for it (by its files, not a collective, so a
    label-map pass of many hours meets no communication timeout). A run split over ranks (an annotator's pass)
    is computed by every rank, each its share; rank 0 joins the shares and writes metrics.json, which the others
    wait for by the file too."""
    run = Run(spec, resources.runs_root)
    if not run.done and _ONLY_CACHED[0]:
        raise RunNotCached(f"the {spec.kind} run {run.hash}")
    run = run.create()
    if run.done:
        return run
    if spec.kind not in COMPUTE:
        raise RuntimeError(f"no compute function for {spec.kind} runs: import repro.steps")
    rank = int(os.environ.get("RANK", "0"))
    # the inputs first, so that a run's recorded wall time is its own, not its annotator's or label maps'
    for dependency in spec.dependencies():
        cached(dependency, resources)
    split = spec.kind in SPLIT_OVER_RANKS and SPLIT_OVER_RANKS[spec.kind](spec)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if rank != 0 and spec.kind not in DISTRIBUTED_KINDS and not split:
            _wait_for(run)
            return run
        if spec.kind in DISTRIBUTED_KINDS or split:
            from repro.train.distributed import init_distributed

            # the group and each rank's GPU before any rank computes: an evaluation can be the first run a job
            # computes (its students cached), and without the group every rank scored the whole set on GPU 0 and
            # the other ranks skipped the barrier below, reading metrics.json before rank 0 wrote it
            init_distributed()
    compute = COMPUTE[spec.kind]
    claim = run.dir / f".computing.{job_key()}"  # rank 0 holds the lock and computes it for this job
    if rank != 0:
        # the other ranks of a torchrun job compute alongside rank 0, which holds the lock and writes the files;
        # they start only once it holds the lock, since another job may hold it for hours (or finish the run)
        while not run.done and not claim.exists():
            time.sleep(WAIT_SECONDS)
        if claim.exists():
            compute(spec, run, resources)
            if split:  # rank 0 joins the shares after the last one: hours after this one, perhaps
                _wait_for(run)
            else:
                torch.distributed.barrier()  # until rank 0 has written metrics.json
        return run
    computed = False
    with run.lock():
        if not run.done:  # another process may have finished it while we waited for the lock
            remove_stale_temporaries(run.dir)
            for stale in run.dir.glob(".computing.*"):  # a killed job's: the lock is ours now
                stale.unlink(missing_ok=True)
            claim.touch()
            try:
                started = time.time()
                resuming = any(run.dir.glob("checkpoint*"))
                # any earlier session logged: a label-map pass or a detector resumes from files of other names
                devices = _record_device(run, earlier_sessions=(run.dir / "log.txt").exists())
                run.log(f"{'resuming' if resuming else 'started'} on {devices[-1]}")
                metrics = dict(compute(spec, run, resources))
                metrics.setdefault("wall_seconds_last_session", round(time.time() - started, 2))
                metrics.setdefault("computed_on", devices)
                run.finish(metrics)
            finally:
                claim.unlink(missing_ok=True)
            computed = True
            run.log(f"finished in {time.time() - started:.1f}s")
            progress.note_finished(run.hash, run.kind, time.time() - started)
    if computed and torch.distributed.is_initialized() and spec.kind in DISTRIBUTED_KINDS:
        torch.distributed.barrier()
    return run


def _record_device(run: Run, earlier_sessions: bool) -> list[str]:
    """Add this session's machine to the run's list of the machines that computed it, and return the list: a run
    resumed elsewhere can mix kinds of CPU or GPU, whose kernels round differently. Under torchrun it is rank 0's
    machine (the nodes of one job are taken to be of one kind)."""
    path = run.dir / DEVICES_FILE
    # a run begun before runs recorded their machine
    known = path.read_text().splitlines() if path.exists() else ["not recorded"] if earlier_sessions else []
    device = computing_device()
    if device not in known:
        known.append(device)
        write_text_atomic(path, "".join(line + "\n" for line in known))
    return known


def job_key() -> str:
    """What the ranks of one torchrun job (one attempt of it) share and another job does not: its rendezvous."""
    return "-".join(os.environ.get(key, "0").replace("/", "_") for key in (
        "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT"))


def _wait_for(run: Run) -> None:
    print(f"[{run.kind} {run.hash[:8]}] rank {os.environ.get('RANK')} waits for rank 0 to compute it",
          file=sys.stderr, flush=True)
    while not run.done:
        time.sleep(WAIT_SECONDS)
