"""One progress line after each run that a long job computes (`python -m repro all`, `make paper`): how many of the
runs the cache lacked are done, the time so far, and an estimate of the time left. The estimate gives each run
still to compute its kind's mean time so far (the overall mean for a kind not seen yet): a guess that improves as
the job goes, and says so."""
from __future__ import annotations

import sys
import time


class RunProgress:
    def __init__(self, pending: dict[str, str]):
        self.pending = dict(pending)              # hash -> kind, of the runs still to compute
        self.total = len(pending)
        self.seconds: dict[str, list[float]] = {}  # kind -> seconds of the runs computed so far
        self.started = time.time()

    def finished(self, run_hash: str, kind: str, seconds: float) -> str | None:
        if self.pending.pop(run_hash, None) is None:
            return None
        self.seconds.setdefault(kind, []).append(seconds)
        done = self.total - len(self.pending)
        every = [s for values in self.seconds.values() for s in values]
        overall = sum(every) / len(every)
        left = sum(sum(self.seconds[k]) / len(self.seconds[k]) if k in self.seconds else overall
                   for k in self.pending.values())
        return (f"progress: {done}/{self.total} runs computed, {duration(time.time() - self.started)} so far, "
                f"about {duration(left)} left (each kind's mean so far)" if self.pending else
                f"progress: all {self.total} runs computed in {duration(time.time() - self.started)}")


def duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


_tracker: RunProgress | None = None


def track(pending: dict[str, str]) -> None:
    """Report progress over these runs (hash -> kind: the runs a job must compute) as each finishes."""
    global _tracker
    _tracker = RunProgress(pending) if pending else None


def note_finished(run_hash: str, kind: str, seconds: float) -> None:
    if _tracker is not None and (line := _tracker.finished(run_hash, kind, seconds)):
        print(line, file=sys.stderr, flush=True)
