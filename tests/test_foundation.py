"""The suite's skeleton: configs and their hashes, the run cache, results files, claims and `compare`."""
import json

import numpy as np
import pandas as pd
import pytest

from repro import results
from repro.claims import Claim, FAILS, HOLDS, NO_DATA, NOT_SHOWN, band_verdict
from repro.config import ConfigError, parse_overrides, profile_config, with_changes
from repro.experiment import compare, discover
from repro.pipeline import student_spec
from repro.runs import COMPUTE, Resources, Run, cached
from repro.specs import Spec


def test_same_config_same_spec_and_changed_config_new_hash():
    base = profile_config("smoke")
    assert student_spec(base) == student_spec(profile_config("smoke"))
    assert student_spec(with_changes(base, {"seed": 1})).hash != student_spec(base).hash
    assert student_spec(with_changes(base, {"seed": 0})).hash == student_spec(base).hash


def test_a_spec_is_immutable_and_its_body_a_copy():
    spec = Spec("train", {"a": {"b": [1, 2]}})
    spec.body["a"]["b"].append(3)
    assert spec["a"] == {"b": [1, 2]}
    with pytest.raises(AttributeError):
        spec.kind = "eval"
    assert Spec.from_json(spec.as_json()) == spec


def test_profiles_differ_in_sizes_only():
    smoke, proxy = profile_config("smoke"), profile_config("proxy")
    assert set(smoke) == set(proxy)
    assert smoke["supervision"] == proxy["supervision"]
    assert smoke["train"]["opt"] == proxy["train"]["opt"] == profile_config("paper")["train"]["opt"]


def test_overrides_parse_json_and_reject_unknown_keys():
    assert parse_overrides(["train.epochs=3", "supervision.mode=relabel", "train.scale=[0.2, 1.0]"]) == {
        "train.epochs": 3, "supervision.mode": "relabel", "train.scale": [0.2, 1.0]}
    with pytest.raises(ConfigError, match="train.epochz"):
        with_changes(profile_config("smoke"), {"train.epochz": 3})
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["train.epochs"])


def test_cached_run_is_reused_and_a_changed_spec_is_a_new_run(tmp_path, monkeypatch):
    calls = []

    def compute(spec, run, resources):
        calls.append(run.hash)
        return {"value": len(calls)}

    monkeypatch.setitem(COMPUTE, "train", compute)
    resources = Resources(tmp_path)
    first = cached(Spec("train", {"a": 1}), resources)
    again = cached(Spec("train", {"a": 1}), resources)
    other = cached(Spec("train", {"a": 2}), resources)
    assert first.dir == again.dir and again.metrics["value"] == 1
    assert len(calls) == 2 and other.dir != first.dir
    assert json.loads((first.dir / "spec.json").read_text()) == Spec("train", {"a": 1}).as_json()


def test_interrupted_run_resumes_from_what_it_left(tmp_path, monkeypatch):
    def compute(spec, run, resources, fail_after=None):
        state = run.dir / "checkpoint.json"
        done_steps = json.loads(state.read_text())["step"] if state.exists() else 0
        for step in range(done_steps, 4):
            if step == fail_after:
                raise KeyboardInterrupt
            state.write_text(json.dumps({"step": step + 1}))
        return {"steps_done_here": 4 - done_steps}

    spec, resources = Spec("train", {"b": 1}), Resources(tmp_path)
    monkeypatch.setitem(COMPUTE, "train", lambda *args: compute(*args, fail_after=2))
    with pytest.raises(KeyboardInterrupt):
        cached(spec, resources)
    assert not Run(spec, tmp_path).done
    monkeypatch.setitem(COMPUTE, "train", compute)
    run = cached(spec, resources)
    assert run.metrics["steps_done_here"] == 2


def _hand_made(relabel_gain):
    rows = []
    for seed in range(3):
        for setting, base in [("original", 60.0), ("label_smoothing_0.1", 60.2), ("label_cleaning", 60.1),
                              ("relabel", 60.0 + relabel_gain)]:
            for metric in ["imagenet_top1", "imagenetv2_top_images_top1", "real_top1", "shankar_top1"]:
                rows.append({"model": "resnet50", "setting": setting, "seed": seed, "metric": metric,
                             "value": base + 0.1 * seed})
    return results.measurements(rows)


def test_results_writer_and_plot(tmp_path):
    measured = _hand_made(1.0)
    summary = results.summarise(measured, "table3")
    paths = results.write_results(measured, summary, tmp_path, "table3")
    table = pd.read_csv(paths["table"])
    assert len(table) == 4 and {"imagenet_top1_mean", "imagenet_top1_std", "imagenet_top1_n",
                                "imagenet_top1_reported"} <= set(table.columns)
    relabel = table[table.setting == "relabel"].iloc[0]
    assert relabel.imagenet_top1_mean == pytest.approx(61.1) and relabel.imagenet_top1_n == 3
    assert relabel.imagenet_top1_reported == 78.9
    png = results.bar_plot(summary, tmp_path / "table3.png", "Table 3")
    assert png.stat().st_size > 10_000
    assert results.read_measurements(tmp_path, "table3").equals(measured)


def test_claim_verdicts_use_the_paired_interval():
    measured = _hand_made(1.0)
    assert Claim("x", better="relabel", worse="original").evaluate(measured).verdict == HOLDS
    assert Claim("x", better="original", worse="relabel").evaluate(measured).verdict == FAILS
    noisy = measured.copy()
    noisy.loc[(noisy.setting == "relabel") & (noisy.seed == 1), "value"] -= 3.0
    assert Claim("x", better="relabel", worse="original").evaluate(noisy).verdict == NOT_SHOWN
    within = Claim("x", kind="within", margin=0.5, better="label_cleaning", worse="original")
    assert within.evaluate(measured).verdict == HOLDS


def test_a_seed_measured_on_one_side_only_or_nan_is_left_out_and_named_and_two_rows_per_seed_are_refused():
    measured = _hand_made(1.0)
    claim = Claim("x", better="relabel", worse="original")
    nan = measured.copy()
    nan.loc[(nan.setting == "relabel") & (nan.seed == 2) & (nan.metric == "imagenet_top1"), "value"] = float("nan")
    verdict = claim.evaluate(nan)  # a NaN never reads as a failure
    assert verdict.verdict == HOLDS and "(n=2)" in verdict.detail
    assert verdict.detail.endswith("; seed(s) 2 left out (measured on one side only, or NaN)")
    one_sided = measured[~((measured.setting == "original") & (measured.seed == 0))]
    assert "seed(s) 0 left out" in claim.evaluate(one_sided).detail
    all_nan = measured.assign(value=float("nan"))
    assert claim.evaluate(all_nan).verdict == NO_DATA
    band = Claim("x", kind="range", better="relabel", low=0, high=100)
    assert band.evaluate(nan).detail.endswith("seed(s) 2 left out (measured on one side only, or NaN)")
    two_models = pd.concat([measured, measured.assign(model="resnet18", value=measured.value - 20)])
    with pytest.raises(ValueError, match="a claim reads 2 rows per seed of relabel imagenet_top1: give it the model"):
        claim.evaluate(two_models)  # averaging the two would decide the claim on neither
    assert Claim("x", better="relabel", worse="original", model="resnet50").evaluate(two_models).verdict == HOLDS


def test_a_band_claim_whose_interval_spans_the_whole_band_is_not_shown_rather_than_failed():
    """Both ends of such an interval lie outside the band, one on each side: that is no evidence against it."""
    spread = [-4.0, 0.0, 4.0]  # mean 0, 95% interval about ±9.9
    assert band_verdict(spread, -1.0, 1.0)[0] == NOT_SHOWN
    assert band_verdict([5.0, 5.1, 5.2], -1.0, 1.0)[0] == FAILS
    assert band_verdict([0.1, 0.2, 0.3], -1.0, 1.0)[0] == HOLDS
    rows = [{"model": "resnet50", "setting": "crops", "seed": seed, "metric": "share", "value": value}
            for seed, value in enumerate(spread)]
    wide = Claim("x", kind="range", metric="share", better="crops", low=-1.0, high=1.0)
    assert wide.evaluate(results.measurements(rows)).verdict == NOT_SHOWN


def test_compare_exits_non_zero_when_a_checked_claim_fails(tmp_path, capsys):
    experiments = {name: exp for name, exp in discover().items() if name == "table3"}
    out_dir = tmp_path / "proxy"
    out_dir.mkdir()
    _hand_made(1.0).to_csv(out_dir / "table3_seeds.csv", index=False)
    assert compare(experiments, "proxy", tmp_path, tmp_path / "runs") == 0
    _hand_made(-1.0).to_csv(out_dir / "table3_seeds.csv", index=False)
    assert compare(experiments, "proxy", tmp_path, tmp_path / "runs") == 1
    assert "FAILS table3: ReLabel > original on imagenet_top1" in capsys.readouterr().out
    # smoke results are shown but never gate
    (tmp_path / "smoke").mkdir()
    _hand_made(-1.0).to_csv(tmp_path / "smoke" / "table3_seeds.csv", index=False)
    assert compare(experiments, "smoke", tmp_path, tmp_path / "runs") == 0


def test_every_paper_table_and_figure_is_listed():
    names = set(discover())
    expected = {f"table{i}" for i in range(2, 11)} | {"tableA1", "figure2", "figure4", "figure5", "figure6",
                                                        "figureA2", "figureA3", "costs"}
    assert expected <= names


def test_reported_numbers_ship_with_the_package():
    reported = results.reported_numbers()
    row = reported[(reported.experiment == "table3") & (reported.setting == "relabel")
                   & (reported.metric == "imagenet_top1")]
    assert float(row.value.iloc[0]) == 78.9 and np.isfinite(reported.value).all()


def test_compare_writes_a_markdown_report(tmp_path):
    from repro.experiment import Experiment

    experiments = {"table3": discover()["table3"],  # and one not implemented, which compare names as such
                   "table99": Experiment(name="table99", title="a table to come", paper_ref="Table 99")}
    (tmp_path / "proxy").mkdir()
    _hand_made(1.0).to_csv(tmp_path / "proxy" / "table3_seeds.csv", index=False)
    first = {"seeds": [0, 1, 2], "seconds": 600.0, "finished": "2026-01-01 10:00",
             "command": "python -m repro table3 --profile proxy --seeds 3"}
    results.write_meta(tmp_path / "proxy", "table3", {**first, "seconds": 1.0, "finished": "2026-01-01 11:00",
                                                      "invocations": [first, {**first, "seconds": 1.0}]})
    compare(experiments, "proxy", tmp_path, tmp_path / "runs", markdown=tmp_path / "results.md")
    text = (tmp_path / "results.md").read_text()
    assert "- `python -m repro table3 --profile proxy --seeds 3` finished 2026-01-01 10:00 after 10.0 min" in text
    assert "| resnet50 | relabel | imagenet_top1 | 61.10 ± 0.10 (3) | 78.9 | -17.80 |" in text
    assert "**holds**: ReLabel > original on imagenet_top1" in text
    assert "table99 (Table 99): not implemented yet" in text


def test_the_suite_installs_no_top_level_name_but_repro():
    """`tables` is PyTables and `robustness` another PyPI library: the experiment folders install as repro.*, and
    without __init__.py they never shadow those from the repository's root."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    packages = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert all(name == "repro" or name.startswith("repro.") for name in packages)
    for folder in ("tables", "figures", "downstream", "robustness"):
        assert not (root / folder / "__init__.py").exists()
        assert (root / "repro" / folder).resolve() == (root / folder).resolve()


def test_staged_results_move_in_together_and_clear_only_this_hosts_dead_stages(tmp_path):
    import socket

    dead = tmp_path / f".staging-table3-{socket.gethostname()}-999999999-abc"
    other_host = tmp_path / ".staging-table3-another.node-1-abc"
    dead.mkdir(), other_host.mkdir()
    (tmp_path / "table3.csv").write_text("old")
    with pytest.raises(RuntimeError):
        with results.staged_results(tmp_path, "table3") as stage:
            (stage / "table3.csv").write_text("new")
            raise RuntimeError("killed before the moves")
    assert (tmp_path / "table3.csv").read_text() == "old"
    with results.staged_results(tmp_path, "table3") as stage:
        (stage / "table3.csv").write_text("new")
        results.write_meta(stage, "table3", {"seeds": [0]})
    assert (tmp_path / "table3.csv").read_text() == "new" and results.out_of_step(tmp_path, "table3") == []
    assert not dead.exists() and other_host.exists()
    (tmp_path / "table3.csv").write_text("edited")
    assert results.out_of_step(tmp_path, "table3") == ["table3.csv"]
