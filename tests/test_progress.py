"""The progress line after each computed run of a long job, with its estimate of the time left."""
from repro.progress import RunProgress


def test_progress_counts_only_the_pending_runs_and_estimates_each_kind_by_its_own_mean():
    progress = RunProgress({"a": "train", "b": "train", "c": "eval", "d": "eval", "e": "world"})
    assert progress.finished("cached-elsewhere", "train", 5.0) is None  # not one of the job's runs
    line = progress.finished("a", "train", 600.0)
    # left: one train at 600 s, two evals and a world at the overall mean (600 s): 40 min
    assert line.startswith("progress: 1/5 runs computed") and "about 40 min left" in line
    line = progress.finished("c", "eval", 60.0)
    # left: train 600 + eval 60 + world at the overall mean 330: 990 s
    assert "2/5" in line and "about 16 min left" in line
    for run_hash, kind in (("b", "train"), ("d", "eval")):
        progress.finished(run_hash, kind, 1.0)
    assert progress.finished("e", "world", 1.0).startswith("progress: all 5 runs computed in")
