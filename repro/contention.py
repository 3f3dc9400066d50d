"""How much of the machine other processes used while a span was timed.

Wall-time comparisons between runs (Section 3.3's costs, Figure 6) are only fair between runs timed on an otherwise
idle machine: a student timed beside another job takes up to 6x longer on 2 cores. A probe takes the busy CPU time
of the whole machine (/proc/stat) less that of this process tree (/proc/<pid>/stat), so a run records the share of
the machine's CPU time that others took while it was timed. Linux only: elsewhere the share is None (unknown).
The standard library has no per-process CPU accounting of other processes, and psutil is not in the stack.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Mapping

OTHERS_CPU_SHARE = "others_cpu_share"  # a training run's
GENERATION_OTHERS_CPU_SHARE = "generation_others_cpu_share"  # a label-map generation's
# above it a run's wall time is flagged as timed beside other work (proxy students' epochs on an idle 2-core
# machine measured 0.000-0.001; one that shared it with a 6-second report rendering, 0.105)
BUSY_SHARE = 0.10

_PROC = Path("/proc")


def _machine_busy_ticks() -> tuple[int, int]:
    """(busy clock ticks summed over the CPUs /proc/stat counts, number of those CPUs)."""
    lines = (_PROC / "stat").read_text().splitlines()
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in lines[0].split()[1:8])
    cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    return user + nice + system + irq + softirq, cpus


def _process_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, CPU ticks of the process and of its reaped children), or None for one that has gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after the command name, which may hold spaces
    return int(fields[1]), sum(int(v) for v in fields[11:15])  # ppid; utime, stime, cutime, cstime


def _tree_ticks(root: int) -> int:
    """CPU ticks of `root` and its live descendants (a child that has exited is in its parent's cutime)."""
    stats = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            stat = _process_stat(int(entry.name))
            if stat is not None:
                stats[int(entry.name)] = stat
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += stats[pid][1] if pid in stats else 0
        todo.extend(children.get(pid, []))
    return total


def tree_root() -> int:
    """The process tree a run's work runs in: under torchrun with several local processes, the launcher's (the
    other ranks on this node are the run, not others), else this process's."""
    return os.getppid() if int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1 else os.getpid()


class ContentionProbe:
    """Started on creation; `others()` gives (wall seconds, CPU seconds others used) since then, or None where
    /proc cannot be read."""

    def __init__(self, root: int | None = None):
        self.root = tree_root() if root is None else root
        self.start = self._sample()

    def _sample(self):
        try:
            busy, cpus = _machine_busy_ticks()
            return time.perf_counter(), busy, _tree_ticks(self.root), cpus
        except (OSError, ValueError, IndexError):
            return None

    def others(self) -> tuple[float, float, int] | None:
        """(wall seconds, CPU seconds other processes used, CPUs) since the probe started."""
        end = self._sample()
        if self.start is None or end is None:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        others = max(0, (end[1] - self.start[1]) - (end[2] - self.start[2])) / ticks
        return end[0] - self.start[0], others, end[3]


def others_share(wall_seconds: float, others_cpu_seconds: float, cpus: int) -> float | None:
    """The share of the machine's CPU time (wall x CPUs) that other processes used, or None if unmeasured."""
    if not cpus or wall_seconds <= 0:
        return None
    return round(min(1.0, others_cpu_seconds / (wall_seconds * cpus)), 4)


def measured_share(probe: ContentionProbe) -> float | None:
    """The share since `probe` started (a span measured in one piece, such as label-map generation)."""
    got = probe.others()
    return None if got is None else others_share(*got)


def busy_timings(timed: list[tuple[str, Mapping, str]]) -> str:
    """One line on the wall times an experiment compares, given (label, a run's metrics, the key of its share):
    those timed while other processes used more than BUSY_SHARE of the machine, and those with no record of it
    (timed before the probe existed, or off Linux); '' when every one was timed on an otherwise idle machine."""
    busy = [f"{label} ({metrics[key]:.0%})" for label, metrics, key in timed
            if metrics.get(key) is not None and metrics[key] > BUSY_SHARE]
    unknown = [label for label, metrics, key in timed if metrics.get(key) is None]
    parts = []
    if busy:
        parts.append(f"timed while other processes used over {BUSY_SHARE:.0%} of the machine, so their wall times "
                     f"overstate and the ratios built on them are unsound: {', '.join(busy)}; delete those runs' "
                     "folders (`--plan` lists them) and rerun on an otherwise idle machine")
    if unknown:
        parts.append(f"{len(unknown)} of {len(timed)} timed runs have no record of the machine's other load "
                     f"({', '.join(unknown[:4])}{', ...' if len(unknown) > 4 else ''})")
    return "wall times: " + "; ".join(parts) if parts else ""
