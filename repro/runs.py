"""The content-addressed run cache.

A run is a kind (world, annotator, labelmaps, train, ...) plus a fully resolved config; the hash of both names
`<runs>/<kind>/<hash>/`, which holds `config.json`, `log.txt`, the run's own files (checkpoints, data) and, once it
has finished, `metrics.json`. Any experiment asking for the same config gets the finished run back; an interrupted
one is handed to its function again, which resumes from what it left in the directory.
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Mapping

import torch.distributed

from repro.config import canonical_json, config_hash

METRICS = "metrics.json"


def write_json_atomic(path: Path, obj) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


class Run:
    def __init__(self, kind: str, config: Mapping, runs_root: str | os.PathLike):
        self.kind = kind
        self.config = dict(config)
        self.hash = config_hash({"kind": kind, "config": self.config})
        self.dir = Path(runs_root) / kind / self.hash
        self.dir.mkdir(parents=True, exist_ok=True)
        config_file = self.dir / "config.json"
        if config_file.exists():
            stored = json.loads(config_file.read_text())
            if canonical_json(stored) != canonical_json(self.config):
                raise RuntimeError(f"{config_file} holds a different config for hash {self.hash}")
        else:
            write_json_atomic(config_file, self.config)

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


def cached_run(kind: str, config: Mapping, runs_root: str | os.PathLike,
               compute: Callable[[Run], Mapping]) -> Run:
    """The finished run for (kind, config): reused if done, else computed (resuming whatever it left before).

    Under torchrun every rank computes (a training run is one DDP job) and rank 0 alone takes the lock and writes
    the run's files; steps that are not distributed (world, label maps) must be cached by one process first."""
    run = Run(kind, config, runs_root)
    if run.done:
        return run
    if int(os.environ.get("RANK", "0")) != 0:
        # the other ranks of a torchrun job train alongside rank 0, which holds the lock and writes the files
        compute(run)
        if torch.distributed.is_initialized():
            torch.distributed.barrier()  # until rank 0 has written metrics.json
        return run
    with run.lock():
        if not run.done:  # another process may have finished it while we waited for the lock
            started = time.time()
            run.log("started" if not any(run.dir.glob("checkpoint*")) else "resuming")
            metrics = dict(compute(run))
            metrics.setdefault("wall_seconds_last_session", round(time.time() - started, 2))
            run.finish(metrics)
            run.log(f"finished in {time.time() - started:.1f}s")
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return run
