"""A fresh smoke run of every implemented experiment gives exactly the recorded numbers (tests/regression/)."""
import json

import pytest

from tests.regression.record import RECORD, smoke_metrics


@pytest.mark.slow
def test_smoke_metrics_equal_the_regression_record(tmp_path):
    recorded = json.loads(RECORD.read_text())
    fresh = smoke_metrics(tmp_path / "runs", tmp_path / "results")
    assert sorted(fresh) == sorted(recorded), "an experiment was added or removed: rewrite the record"
    for name in recorded:
        changed = {key: (recorded[name].get(key), fresh[name].get(key))
                   for key in set(recorded[name]) | set(fresh[name]) if recorded[name].get(key) != fresh[name].get(key)}
        assert not changed, (f"{name}: (recorded, now) differ: {changed}; if deliberate, run "
                             "`python -m tests.regression.record` and say why in the commit")
