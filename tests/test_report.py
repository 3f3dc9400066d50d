"""The report: every experiment's section, its numbers beside the paper's, verdicts coloured (and "not checked"
at smoke), figures embedded; and the page as headless Chromium renders it (skipped where Chromium is absent)."""
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repro import results
from repro.config import profile_config, with_changes
from repro.experiment import discover
from repro.plotting import plt
from repro.report import (README_MARKERS, build_sections, overview_table, replace_readme_block,
                          write_report)
from tests.browser import chromium, probe_page, screenshot

needs_chromium = pytest.mark.skipif(chromium() is None, reason="no chromium on this machine (.ci/run installs "
                                                               "Debian's chromium)")


def _write_table3(out_dir: Path, relabel_gain: float, **recorded) -> None:
    """Results of table3 as its run would write them, from made-up numbers (3 seeds)."""
    rng = np.random.default_rng(0)
    rows = [{"model": "resnet50", "setting": setting, "seed": seed, "metric": metric,
             "value": 30 + (relabel_gain if setting == "relabel" else 0) + rng.normal(0, 0.1)}
            for setting in ("original", "label_smoothing_0.1", "label_cleaning", "relabel") for seed in range(3)
            for metric in ("imagenet_top1", "real_top1")]
    measured = results.measurements(rows)
    summary = results.summarise(measured, "table3")
    with results.staged_results(out_dir, "table3") as stage:
        results.write_results(measured, summary, stage, "table3")
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [0, 1])
        fig.savefig(stage / "table3.png")
        plt.close(fig)
        invocation = {"seeds": [0, 1, 2], "seconds": 90.0, "finished": "2026-12-03 12:00",
                      "command": "python -m repro table3 --profile proxy --seeds 3"}
        results.write_meta(stage, "table3", {**invocation, "report": "annotator: val top-1 74.38%",
                                             "invocations": [invocation], **recorded})


@pytest.fixture(scope="module")
def experiments():
    return discover()


def test_report_shows_every_experiment_its_numbers_beside_the_paper_and_coloured_verdicts(tmp_path, experiments):
    _write_table3(results.results_dir(tmp_path, "proxy"), relabel_gain=2.0)
    html, md = write_report(experiments, "proxy", tmp_path, tmp_path / "runs")
    page, text = html.read_text(), md.read_text()
    for name in experiments:
        assert f'id="{name}"' in page and f"## {name}" in text
    assert '<img src="table3.png"' in page and "![table3: table3.png](table3.png)" in text
    assert "no results yet" in page and "annotator: val top-1 74.38%" in page
    # the paper's ReaL top-1 for the original labels (Table 3) beside the reproduced mean, with the difference
    paper = results.reported_for("table3")
    real = paper[(paper.setting == "original") & (paper.metric == "real_top1")].value.item()
    row = next(line for line in text.splitlines() if line.startswith("| resnet50 | original | real_top1 |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]  # model, setting, metric, mean ± std, n, paper, diff
    assert cells[5] == f"{real:g}"
    assert float(cells[6]) == pytest.approx(float(cells[3].split("±")[0]) - real, abs=0.01)
    assert page.count('class="verdict holds"') == 6  # ReLabel 2 pp above three others on two metrics
    assert 'class="verdict fails"' not in page
    # results whose meta predates the record of their runs say so, not a blank that reads as none
    overview = next(line for line in text.splitlines() if line.startswith("| [table3]"))
    assert overview.endswith("| not recorded | not recorded |")
    assert "Computed on: not recorded" in text


def test_each_section_names_the_machines_that_computed_its_runs(tmp_path, experiments):
    machines = {"x86_64 AVX512 Intel Xeon; CPU only": 10, "not recorded + x86_64 AVX2 AMD EPYC; CPU only": 2}
    _write_table3(results.results_dir(tmp_path, "proxy"), relabel_gain=2.0, runs=12, runs_seconds=600.0,
                  computed_on=machines)
    html, md = write_report(experiments, "proxy", tmp_path, tmp_path / "runs")
    line = ("Computed on: 10 runs on x86_64 AVX512 Intel Xeon; CPU only; "
            "2 runs on not recorded + x86_64 AVX2 AMD EPYC; CPU only")
    assert line in md.read_text() and line in html.read_text()


def test_a_failing_claim_is_red_at_proxy_and_not_checked_at_smoke(tmp_path, experiments):
    for profile in ("proxy", "smoke"):
        _write_table3(results.results_dir(tmp_path, profile), relabel_gain=-2.0)
    proxy, _ = write_report(experiments, "proxy", tmp_path, tmp_path / "runs")
    smoke, smoke_md = write_report(experiments, "smoke", tmp_path, tmp_path / "runs")
    assert proxy.read_text().count('class="verdict fails"') == 6
    assert 'class="verdict fails"' not in smoke.read_text()
    assert smoke.read_text().count("not checked at smoke</span>") == 6
    assert "**not checked at smoke**: ReLabel > original on imagenet_top1" in smoke_md.read_text()


@needs_chromium
def test_the_page_loads_in_chromium_with_every_image_and_section(tmp_path, experiments):
    _write_table3(results.results_dir(tmp_path, "proxy"), relabel_gain=2.0)
    html, _ = write_report(experiments, "proxy", tmp_path, tmp_path / "runs")
    found = probe_page(html)
    assert found["images"] == [{"src": "table3.png", "width": 200}]
    assert set(experiments) <= set(found["sections"]) and {"overview", "world", "machine"} <= set(found["sections"])
    assert found["tables"]["table3"] == 2  # the claims and the numbers


@pytest.mark.slow
@needs_chromium
def test_the_smoke_report_of_every_experiment_renders_in_chromium(smoke_results, experiments):
    html, _ = write_report(experiments, "smoke", smoke_results.results, smoke_results.runs)
    found = probe_page(html)
    broken = [image["src"] for image in found["images"] if image["width"] <= 0]
    assert found["images"] and not broken, f"images that did not load: {broken}"
    implemented = [name for name, experiment in experiments.items() if experiment.implemented]
    missing = [name for name in implemented if found["tables"].get(name, 0) < 1]
    assert not missing, f"sections without a table: {missing}"
    shot = screenshot(html, smoke_results.results / "smoke" / "report.png")
    assert shot.exists() and shot.stat().st_size > 10_000


@pytest.mark.slow
def test_compare_at_smoke_says_not_checked_rather_than_fails(smoke_results, experiments, capsys):
    from repro.experiment import compare

    assert compare(experiments, "smoke", smoke_results.results, smoke_results.runs) == 0
    printed = capsys.readouterr().out
    assert "NOT CHECKED" in printed and "not checked at smoke" in printed and "[      FAILS]" not in printed
    # computed just now, each experiment's results name the runs the current code plans
    from repro.experiment import PLAN_CURRENT, plan_state

    out_dir = smoke_results.results / "smoke"
    states = {name: plan_state(experiment, "smoke", results.read_meta(out_dir, name), smoke_results.runs)
              for name, experiment in experiments.items() if results.read_meta(out_dir, name)}
    assert states and all(state == PLAN_CURRENT for state, _ in states.values()), states


COMMITTED = Path(__file__).resolve().parents[1] / "results" / "proxy"


def _git(*args: str) -> str:
    """A git command's output, run in the repository that holds COMMITTED."""
    return subprocess.run(["git", "-C", str(COMMITTED.parents[1]), *args], capture_output=True, text=True).stdout


@pytest.mark.slow
def test_the_committed_proxy_results_have_the_current_experiments_settings_and_metrics(smoke_results, experiments):
    """results/proxy/ in the repository must be what the current code's experiments write: the same key columns,
    settings and metrics as a fresh smoke run of each (the profiles change sizes, never what is measured; the keys
    an experiment declares profile-sized and the metrics it declares data-dependent are left out)."""
    committed = sorted(COMMITTED.parents[1] / name for name in _git("ls-files", "results/proxy").split()
                       if name.endswith("_seeds.csv"))
    if not committed:
        pytest.skip(f"no results committed under {COMMITTED} (files there that git does not track are not checked)")
    stale = []
    for path in committed:
        name = path.name[:-len("_seeds.csv")]
        experiment = experiments[name]
        keys = list(experiment.key_columns)
        setting_keys = [key for key in keys if key not in experiment.profile_sized_keys]
        proxy = results.read_measurements(COMMITTED, name, keys)
        smoke = results.read_measurements(smoke_results.results / "smoke", name, keys)
        optional = set(experiment.data_dependent_metrics)
        for what, have, want in (("columns", list(proxy.columns), list(smoke.columns)),
                                 ("metrics", set(proxy.metric) - optional, set(smoke.metric) - optional),
                                 ("settings", set(map(tuple, proxy[setting_keys].values)),
                                  set(map(tuple, smoke[setting_keys].values)))):
            if have != want:
                stale.append(f"{path.name}: {what} differ from a fresh run's (only committed: "
                             f"{sorted(set(have) - set(want))[:5]}, only fresh: {sorted(set(want) - set(have))[:5]})")
    assert not stale, "rerun `make paper` and commit results/proxy:\n" + "\n".join(stale)


def test_results_say_whether_they_were_computed_from_the_runs_the_current_code_plans(experiments, tmp_path):
    from dataclasses import replace

    from repro.experiment import PLAN_CURRENT, PLAN_DIFFERS, PLAN_UNRECORDED, Context, plan_state, runs_record

    table5 = experiments["table5"]
    state = lambda experiment, meta: plan_state(experiment, "proxy", meta, tmp_path / "runs")
    ctx = Context("proxy", profile_config("proxy"), [0, 1], tmp_path / "runs", tmp_path)
    meta = {"seeds": [0, 1], **runs_record(table5, ctx)}
    assert meta["runs"] == 0 and state(table5, meta)[0] == PLAN_CURRENT
    # another seed count, another experiment's runs, or a config change plans other runs
    stale, note = state(table5, {**meta, "seeds": [0, 1, 2]})
    assert stale == PLAN_DIFFERS and note.endswith("rerun: python -m repro table5 --profile proxy --seeds 3")
    assert state(experiments["table6"], meta)[0] == PLAN_DIFFERS
    changed = replace(ctx, config=with_changes(ctx.config, {"train.epochs": 5, "train.crop_size": 80}))
    assert state(table5, {"seeds": [0, 1], **runs_record(table5, changed)})[0] == PLAN_DIFFERS
    # ... unless the meta records that change, as an invocation with --set does; its rerun command reads it back
    current, note = state(table5, {"seeds": [0, 1], "overrides": {"train.epochs": 5, "train.crop_size": 80},
                                   **runs_record(table5, changed)})
    assert current == PLAN_CURRENT and "at proxy --set train.epochs=5 --set train.crop_size=80" in note
    # results written before the record, under --rows (which keeps other invocations' rows), or from no run at all
    assert state(table5, {"seeds": [0, 1]})[0] == PLAN_UNRECORDED
    assert runs_record(table5, replace(ctx, rows=("relabel",)))["plan_digest"] is None
    runless = replace(table5, plan=lambda ctx: [])
    assert state(runless, {"seeds": [0, 1], **runs_record(runless, ctx)})[0] == PLAN_UNRECORDED


@pytest.mark.parametrize("value", [False, None, 3, 0.5, [1200, 800], {"run": "abc", "kind": "train"}, "/data/a b",
                                   "3", "true"])
def test_a_recorded_set_change_is_printed_as_an_argument_that_reads_back_to_it(value):
    import shlex

    from repro.config import parse_overrides, set_argument

    flag, item = shlex.split(set_argument("train.init", value))
    assert flag == "--set" and parse_overrides([item]) == {"train.init": value}


def test_the_committed_proxy_results_that_record_their_runs_were_computed_from_the_current_plan(experiments):
    """Fast (it lists plans, computes nothing): a change of code or profile that changes a run a committed result
    was computed from makes that result stale until it is rerun and committed again."""
    from repro.experiment import PLAN_CURRENT, plan_state

    metas = {name: meta for name in experiments if (meta := results.read_meta(COMMITTED, name))}
    recorded = {name: plan_state(experiments[name], "proxy", meta, COMMITTED.parents[1] / "runs")
                for name, meta in metas.items() if meta.get("plan_digest")}
    if not recorded:
        pytest.skip(f"no results under {COMMITTED} record their runs")
    wrong = [f"{name}: {note}" for name, (state, note) in recorded.items() if state != PLAN_CURRENT]
    assert not wrong, "\n".join(wrong)


def test_the_readme_block_is_replaced_and_a_readme_without_one_is_named(tmp_path):
    start, end = README_MARKERS
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n{start}\nold table\n{end}\nafter\n")
    replace_readme_block(readme, "new table\n")
    assert readme.read_text() == f"# title\n{start}\nnew table\n{end}\nafter\n"
    readme.write_text("# title\n")
    with pytest.raises(ValueError, match="README.md needs one line"):
        replace_readme_block(readme, "new table\n")


def test_the_readmes_verdict_table_is_what_the_committed_proxy_results_say(experiments):
    """README's table is `report --readme`'s rendering of results/proxy as committed (checked where the folder
    holds only committed, unmodified files, as in CI's clone)."""
    repo = COMMITTED.parents[1]
    if not _git("ls-files", "results/proxy").strip() or _git("status", "--porcelain", "--untracked-files=all",
                                                              "results/proxy").strip():
        pytest.skip("results/proxy holds no committed results, or files that differ from the committed ones")
    start, end = README_MARKERS
    readme = (repo / "README.md").read_text()
    block = readme.split(start, 1)[1].split(end, 1)[0].lstrip("\n")
    sections = build_sections(experiments, "proxy", COMMITTED, repo / "runs")
    assert block == overview_table(sections, "proxy", "results/proxy/report.md"), (
        "README's verdict table is out of date: run `python -m repro report --profile proxy --readme README.md`")


def test_the_declared_data_dependent_metrics_and_profile_sized_keys_are_the_experiments_own(experiments):
    """The committed-results check leaves these out, so a misspelt one would silently widen what it skips."""
    wrong = [f"{name}: {declared}" for name, experiment in experiments.items()
             for declared in ([m for m in experiment.data_dependent_metrics if m not in (experiment.metrics or [])]
                              + [k for k in experiment.profile_sized_keys if k not in experiment.key_columns])]
    assert not wrong, wrong
    assert experiments["figureA2"].data_dependent_metrics and experiments["convergence"].profile_sized_keys


def test_an_experiment_runs_its_claim_seeds_whenever_more_than_one_seed_is_asked(experiments, tmp_path):
    from repro.experiment import Context, planned_specs, with_claim_seeds

    table3 = experiments["table3"]
    ctx = lambda n, profile="proxy": Context(profile, profile_config(profile), list(range(n)), tmp_path / "runs",
                                             tmp_path)
    assert table3.claim_seeds == experiments["tableA1"].claim_seeds == {"proxy": 5}
    assert with_claim_seeds(table3, ctx(1)).seeds == [0]  # one seed is a quick look, not a claim
    assert with_claim_seeds(table3, ctx(3)).seeds == [0, 1, 2, 3, 4]
    assert with_claim_seeds(table3, ctx(7)).seeds == list(range(7))
    assert with_claim_seeds(experiments["table2"], ctx(3)).seeds == [0, 1, 2]
    # where a seed is an ImageNet training, or a claim is not checked, the seeds asked are the seeds run
    assert with_claim_seeds(table3, ctx(3, "paper")).seeds == with_claim_seeds(table3, ctx(3, "smoke")).seeds == [0, 1, 2]
    students = lambda n: {spec["seed"] for spec in planned_specs(table3, ctx(n)) if spec.kind == "train"}
    assert students(3) == {0, 1, 2, 3, 4} and students(1) == {0}
