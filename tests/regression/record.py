"""The smoke-profile regression record: every implemented experiment at the smoke profile, seed 0, and the
metrics it measures that do not depend on the machine's speed (wall times and the ratios built from them are left
out). `python -m tests.regression.record` rewrites `tests/regression/smoke.json`; a change of numbers is deliberate
and its commit says why. `tests/test_regression.py` compares a fresh run with the record."""
from __future__ import annotations

import json
import math
import re
import sys
import tempfile
from pathlib import Path

RECORD = Path(__file__).with_name("smoke.json")
# metrics measured in wall time, or derived from it: they vary from run to run
TIMED = re.compile(r"seconds|per_second|share_of|_share|extra_training_time|speedup|ratio|overtakes|cost|_ms|throughput")


def _value(value: float):
    return None if isinstance(value, float) and math.isnan(value) else round(float(value), 6)


def smoke_metrics(runs_root: Path, results_root: Path) -> dict[str, dict[str, float]]:
    """{experiment: {"model | setting | metric": value}} for every implemented experiment at smoke, seed 0."""
    from repro.config import profile_config
    from repro.experiment import Context, discover, run_experiment
    from repro import results

    record = {}
    for name, experiment in discover().items():
        if not experiment.implemented:
            continue
        ctx = Context(profile="smoke", config=profile_config("smoke"), seeds=[0], runs_root=runs_root,
                      results_root=results_root)
        run_experiment(experiment, ctx)
        measured = results.read_measurements(ctx.out_dir, name)
        rows = {}
        for row in measured.itertuples(index=False):
            if not TIMED.search(row.metric):
                rows[" | ".join(str(getattr(row, key)) for key in getattr(experiment, "key_columns", ("model", "setting"))) + f" | {row.metric}"] = \
                    _value(row.value)
        record[name] = dict(sorted(rows.items()))
    return record


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        record = smoke_metrics(Path(tmp) / "runs", Path(tmp) / "results")
    RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECORD}: {sum(map(len, record.values()))} metrics of {len(record)} experiments", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
