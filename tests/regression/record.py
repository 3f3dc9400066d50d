"""The smoke-profile regression record: every implemented experiment at the smoke profile, seed 0, and the
metrics it measures that do not depend on the machine's speed (wall times and the ratios built from them are left
out). `tests/test_regression.py` compares a fresh run with the record.

One record per kind of CPU: a smoke run trains one epoch near chance, where the rounding of the CPU's kernels
(AVX2, AVX-512, oneDNN's choices) flips the arg-max of a few of the 200 val images, so two CPU kinds give
different numbers from the same code (measured: 45 of 131 metrics differ between two 2-core Xeons at one commit;
each is exactly repeatable on its own machine). A fresh run must equal one machine's record exactly. Record with
torch's default thread count, as CI runs: the thread count changes the numbers too (measured: OMP_NUM_THREADS=1
moved all 6 of Table 10's smoke mAPs by 0.4-3.0 points on a 2-core AMD EPYC).

`python -m tests.regression.record` rewrites the record with this machine's numbers only (a deliberate change of
numbers: its commit says why); `--add-machine` keeps the other machines' records and adds (or replaces) this one's
(a new CPU kind, numbers unchanged on the machines recorded before; or a new experiment, which is then recorded
for this CPU kind only: a machine's record is compared on the metrics it holds); `--add-machine --only EXP`
runs just EXP and replaces only its record on this machine."""
from __future__ import annotations

import argparse
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


def smoke_metrics(runs_root: Path, results_root: Path, only: list[str] | None = None) -> dict[str, dict[str, float]]:
    """{experiment: {"model | setting | metric": value}} for every implemented experiment (or those of `only`)
    at smoke, seed 0."""
    from repro.config import profile_config
    from repro.experiment import Context, discover, run_experiment
    from repro import results

    record = {}
    for name, experiment in discover().items():
        if not experiment.implemented or (only and name not in only):
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


def machine() -> str:
    """The kind of CPU a record was made on (repro.environment.cpu_kind)."""
    from repro.environment import cpu_kind

    return cpu_kind()


def read_records() -> dict[str, dict]:
    """machine -> its record."""
    return json.loads(RECORD.read_text())["machines"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.regression.record", description=__doc__.split("\n\n")[-1])
    parser.add_argument("--add-machine", action="store_true",
                        help="keep the records of other machines (their numbers are unchanged) and add this one's")
    parser.add_argument("--only", nargs="+", metavar="EXPERIMENT",
                        help="with --add-machine: run these experiments only and replace just their records on this "
                             "machine (a new experiment; the others are kept as recorded)")
    args = parser.parse_args(argv)
    if args.only and not args.add_machine:
        parser.error("--only needs --add-machine")
    with tempfile.TemporaryDirectory() as tmp:
        record = smoke_metrics(Path(tmp) / "runs", Path(tmp) / "results", args.only)
    records = read_records() if args.add_machine and RECORD.exists() else {}
    records[machine()] = {**records.get(machine(), {}), **record} if args.only else record
    RECORD.write_text(json.dumps({"machines": records}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECORD}: {sum(map(len, record.values()))} metrics of {len(record)} experiments on "
          f"{machine()} ({len(records)} machines recorded)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
