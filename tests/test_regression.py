"""A fresh smoke run of every implemented experiment gives exactly the numbers recorded on one kind of CPU
(tests/regression/record.py says why there is one record per CPU kind). A machine's record is compared on the
metrics it holds: an experiment or metric added later is recorded on the kind of CPU it was added on (every
metric must be in some record), and one whose meaning changed is dropped from the records it was not
re-measured on."""
import pytest

from tests.regression.record import machine, read_records


def _differences(recorded: dict, fresh: dict) -> dict:
    """(recorded, fresh) of each metric the record holds that differs or is gone from the fresh run."""
    return {f"{name}: {key}": (value, fresh.get(name, {}).get(key))
            for name, metrics in recorded.items() for key, value in metrics.items()
            if value != fresh.get(name, {}).get(key)}


@pytest.mark.slow
def test_smoke_metrics_equal_the_regression_record(smoke_results):
    records = read_records()
    fresh = smoke_results.metrics
    recorded = {(name, key) for record in records.values() for name, metrics in record.items() for key in metrics}
    unrecorded = sorted(f"{name}: {key}" for name, metrics in fresh.items() for key in metrics
                        if (name, key) not in recorded)
    assert not unrecorded, f"{unrecorded[:12]} in no machine's record: `python -m tests.regression.record " \
                           "--add-machine` records them for this CPU kind"
    differences = {kind: _differences(record, fresh) for kind, record in records.items()}
    if any(not found for found in differences.values()):
        return
    here = machine()
    closest = here if here in records else min(differences, key=lambda kind: len(differences[kind]))
    shown = dict(sorted(differences[closest].items())[:12])
    pytest.fail(f"{len(differences[closest])} metrics differ from the record of {closest!r} (recorded, now), "
                f"e.g. {shown}. If deliberate, run `python -m tests.regression.record` and say why in the commit; "
                f"if only this CPU kind ({here!r}) is new, `python -m tests.regression.record --add-machine` "
                "after checking that the code gives the recorded numbers on a recorded machine")
