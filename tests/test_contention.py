"""The probe of other processes' load while a run is timed (repro.contention)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from repro import contention
from repro.contention import BUSY_SHARE, OTHERS_CPU_SHARE, ContentionProbe, busy_timings, others_share


def write_proc(root: Path, machine_busy: int, processes: dict[int, tuple[str, int, int]]) -> None:
    """A fake /proc: /proc/stat with two CPUs whose busy ticks sum to `machine_busy`, and one stat file per
    process {pid: (command name, ppid, ticks)}, its ticks split over utime, stime, cutime and cstime."""
    root.mkdir(exist_ok=True)
    user = machine_busy - 4
    (root / "stat").write_text(f"cpu  {user} 1 1 999 7 1 1 5 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n"
                               "cpu1 0 0 0 0 0 0 0 0 0 0\nintr 1 2 3\n")
    for pid in list(root.iterdir()):
        if pid.name.isdigit():
            (pid / "stat").unlink()
            pid.rmdir()
    for pid, (name, ppid, ticks) in processes.items():
        (root / str(pid)).mkdir()
        split = [ticks - 3, 1, 1, 1]
        fields = ["S", ppid, 1, 1, 0, -1, 0, 0, 0, 0, 0, *split, 20, 0, 1]
        (root / str(pid) / "stat").write_text(f"{pid} ({name}) " + " ".join(map(str, fields)) + "\n")


def test_others_are_the_machines_busy_time_less_the_process_tree(tmp_path, monkeypatch):
    proc = tmp_path / "proc"
    monkeypatch.setattr(contention, "_PROC", proc)
    ticks = os.sysconf("SC_CLK_TCK")
    # 10 runs the probe; 11, its loader worker (a name with a space and a bracket); 20, an unrelated job
    write_proc(proc, 1000, {1: ("init", 0, 10), 10: ("python", 1, 100), 11: ("pt worker) 0", 10, 50),
                            20: ("other job", 1, 400)})
    probe = ContentionProbe(root=10)
    # the tree used 150 + 30 more ticks, the worker then exited, and the other job used 300 (of 500 machine ticks)
    write_proc(proc, 1000 + 500, {1: ("init", 0, 20), 10: ("python", 1, 100 + 150 + 50 + 30),
                                  20: ("other job", 1, 700)})
    wall, others, cpus = probe.others()
    assert cpus == 2 and others == pytest.approx((500 - 180) / ticks)
    assert others_share(10.0, others, cpus) == round((500 - 180) / ticks / 20.0, 4)


def test_a_machine_without_proc_gives_no_share(tmp_path, monkeypatch):
    monkeypatch.setattr(contention, "_PROC", tmp_path / "missing")
    assert ContentionProbe().others() is None and contention.measured_share(ContentionProbe()) is None
    assert others_share(0.0, 0.0, 0) is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux's /proc")
def test_on_this_machine_a_busy_child_counts_as_others_only_outside_its_tree():
    code = "import time, sys\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\n" \
           "print('done', flush=True)\nsys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        outside = ContentionProbe(root=child.pid + 10 ** 7)  # a tree that does not exist: everything is others
        inside = ContentionProbe(root=child.pid)
        assert child.stdout.readline().strip() == "done"
        child_ticks = contention._process_stat(child.pid)[1]
        others_outside, others_inside = outside.others()[1], inside.others()[1]
    finally:
        child.communicate("")
    # the child's 0.6 s of CPU is others to the first probe and its own to the second (the probes start and end
    # a few milliseconds apart, while this machine may run other work)
    assert child_ticks / os.sysconf("SC_CLK_TCK") >= 0.55
    assert others_outside - others_inside == pytest.approx(0.6, abs=0.15)


def test_busy_and_unprobed_timings_are_named():
    timed = [("generation", {"generation_share": 0.01}, "generation_share"),
             ("original seed 0", {OTHERS_CPU_SHARE: BUSY_SHARE + 0.3}, OTHERS_CPU_SHARE),
             ("relabel seed 0", {OTHERS_CPU_SHARE: None}, OTHERS_CPU_SHARE),
             ("relabel seed 1", {"train_seconds": 3.0}, OTHERS_CPU_SHARE)]
    line = busy_timings(timed)
    assert line.startswith("wall times: timed while other processes used over 10% of the machine")
    assert "original seed 0 (40%)" in line and "generation" not in line.split(";")[0]
    assert "2 of 4 timed runs have no record of the machine's other load (relabel seed 0, relabel seed 1)" in line
    assert busy_timings(timed[:1]) == ""

