"""Experiments: what a table or figure module declares, how the suite finds, plans, runs and compares them.

A module in tables/, figures/, downstream/ or robustness/ (installed as repro.tables, ...) defines `EXPERIMENT`.
A training table declares its runs as changes to the profile's base config, and optionally evaluations of them as
data (`TrainingExperiment`); other experiments give a `collect` function and a `plan` of the runs it needs. Both
return measurements (the experiment's key columns, seed, metric, value) and any further tables (`Collected`);
the suite writes them, plots them and checks claims.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import pkgutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

import pandas as pd

from repro import results
from repro.claims import Claim, NO_DATA, Verdict, absolute_checks, evaluate_claims
from repro.config import ConfigError, set_argument, with_changes

EXPERIMENT_PACKAGES = ("repro.tables", "repro.figures", "repro.robustness", "repro.downstream")
CHECKED_PROFILES = ("proxy", "paper")  # smoke runs are too small for any claim to mean something
ORDER = ["table2", "table3", "table4", "table5", "table6", "table7", "table8", "table9", "table10", "tableA1",
         "figure2", "figure4", "figure5", "figure6", "figureA2", "figureA3", "costs", "convergence"]


class NotImplementedExperiment(RuntimeError):
    pass


@dataclass
class Context:
    profile: str
    config: dict                 # the profile's base config with the user's --set changes
    seeds: list[int]
    runs_root: Path
    results_root: Path
    overrides: dict = field(default_factory=dict)
    rows: tuple[str, ...] = ()   # `--rows`: only these settings of a training table (empty: all of them)

    @property
    def out_dir(self) -> Path:
        return results.results_dir(self.results_root, self.profile)


@dataclass
class Collected:
    """What an experiment measured (one row per key, seed and metric), further tables the suite writes as
    `<experiment>_<name>.csv` and hands to the plot, and further files (a name, and the function that writes the
    file at the path it is given), written with the others before the plot."""
    measured: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    files: dict[str, Callable[[Path], object]] = field(default_factory=dict)


@dataclass
class Experiment:
    name: str
    title: str                                   # one line, shown by `python -m repro --help`
    paper_ref: str
    collect: Callable[[Context], Collected | pd.DataFrame] | None = None  # None: not implemented yet
    missing: str = ""                            # for an unimplemented experiment: what it still needs
    claims: list[Claim] = field(default_factory=list)
    metrics: list[str] | None = None
    plot: Callable[[pd.DataFrame, pd.DataFrame, dict, Path, str], None] | None = None  # summary, measured, tables
    key_columns: tuple[str, ...] = results.KEY  # what tells one row of the table from another; claims pair on them
    plan: Callable[[Context], list] | None = None  # the specs of the runs `collect` computes (their inputs follow)
    # paper scale: a metric's tolerance around the reported number (default 0.3); None shows it unjudged
    absolute_tolerances: dict[str, float | None] = field(default_factory=dict)
    report: Callable[[Context], str] | None = None  # extra lines printed after the table (diagnostics)
    # reads the inputs `collect` opens that no run's spec names (a boxes file), raising OSError or ValueError
    # naming the one missing: the pre-flight check calls it before anything computes
    inputs: Callable[[Context], object] | None = None
    # metrics written only where the data has a case for them (a small world may have none): a profile's results
    # may lack them
    data_dependent_metrics: tuple[str, ...] = ()
    # key columns whose values the profile sets (training lengths): two profiles' results differ in them by design
    profile_sized_keys: tuple[str, ...] = ()
    # profile -> the seeds it runs there whenever more than one is asked: more than the suite's 3 where its runs
    # are cheap at that profile and its claims' intervals straddle zero at 3 (docs/results.md)
    claim_seeds: Mapping[str, int] = field(default_factory=dict)

    @property
    def implemented(self) -> bool:
        return self.collect is not None

    @property
    def help(self) -> str:
        status = "" if self.implemented else " [not implemented yet]"
        return f"{self.paper_ref}: {self.title}{status}"


@dataclass
class TrainingExperiment(Experiment):
    """Runs = {(model, setting): changes to the base config}; each is trained once per seed (cached). Each
    evaluation (an evaluator as data, `repro.evaluate.evaluators`) is its own cached run of every trained model."""
    runs: Callable[[dict], Mapping[tuple[str, str], Mapping]] | None = None
    # evaluators as data, or a function of the context that lists them (when they depend on the profile)
    evaluations: list[dict] | Callable[[Context], list[dict]] = field(default_factory=list)

    def __post_init__(self):
        if self.runs is not None and self.collect is None:
            self.collect = self._collect
            self.plan = self._plan

    def _plan(self, ctx: Context) -> list:
        from repro.pipeline import eval_spec, student_spec

        specs = []
        for *_, cfg in self.run_configs(ctx):
            student = student_spec(cfg, ctx.runs_root)
            specs += [student] + [eval_spec(student, evaluation) for evaluation in self.evaluations_for(ctx)]
        return specs

    def evaluations_for(self, ctx: Context) -> list[dict]:
        return self.evaluations(ctx) if callable(self.evaluations) else list(self.evaluations)

    def run_configs(self, ctx: Context) -> list[tuple[str, str, int, dict]]:
        runs = self.runs(ctx.config)
        settings = list(dict.fromkeys(setting for _, setting in runs))
        if unknown := [row for row in ctx.rows if row not in settings]:
            raise ConfigError(f"--rows {unknown[0]}: {self.name} has no such setting; choose from "
                              f"{', '.join(settings)}")
        configs = []
        for (model, setting), changes in runs.items():
            if ctx.rows and setting not in ctx.rows:
                continue
            for seed in ctx.seeds:
                configs.append((model, setting, seed, with_changes(ctx.config, {**changes, "seed": seed})))
        return configs

    def _collect(self, ctx: Context) -> pd.DataFrame:
        from repro.pipeline import evaluate_student, train_student

        rows = []
        configs = self.run_configs(ctx)
        evaluations = self.evaluations_for(ctx)
        for i, (model, setting, seed, cfg) in enumerate(configs, 1):
            print(f"== {self.name} run {i}/{len(configs)}: {model} {setting} seed {seed}", file=sys.stderr, flush=True)
            metrics = dict(train_student(cfg, ctx.runs_root))
            for evaluation in evaluations:
                metrics.update(evaluate_student(cfg, evaluation, ctx.runs_root))
            for metric in self.metrics or ["imagenet_top1"]:
                if metric in metrics:
                    rows.append({"model": model, "setting": setting, "seed": seed, "metric": metric,
                                 "value": metrics[metric]})
        return results.measurements(rows)


def annotator_report(ctx: Context) -> str:
    """Diagnostics printed by every ReLabel table: the annotator's accuracy and its margin over the student."""
    from repro.pipeline import annotator_report as report

    return report(ctx.config, ctx.runs_root, ctx.seeds[0])


def discover() -> dict[str, Experiment]:
    found = {}
    for package_name in EXPERIMENT_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package_name}.{info.name}")
            experiment = getattr(module, "EXPERIMENT", None)
            if isinstance(experiment, Experiment):
                found[experiment.name] = experiment
    rank = {name: i for i, name in enumerate(ORDER)}
    return dict(sorted(found.items(), key=lambda item: (rank.get(item[0], len(ORDER)), item[0])))


def verdicts_for(experiment: Experiment, measured: pd.DataFrame, profile: str) -> list[Verdict]:
    """The claims' verdicts at `profile` (those of the other scale's data left out), and at paper scale the
    absolute checks."""
    scale = "paper" if profile == "paper" else "embedded"
    claims = [claim for claim in experiment.claims if claim.scale in (None, scale)]
    verdicts = evaluate_claims(claims, measured)
    checked = profile in CHECKED_PROFILES
    verdicts = [Verdict(v.claim, v.verdict, v.detail, v.checked and checked) for v in verdicts]
    if profile == "paper":
        summary = results.summarise(measured, experiment.name, keys=experiment.key_columns)
        verdicts += absolute_checks(summary, tolerances=experiment.absolute_tolerances)
    return verdicts


def shown_verdict(verdict: Verdict, profile: str) -> str:
    """The verdict as a reader sees it: at a profile whose claims are not checked (smoke), "not checked at
    <profile>" in place of what it measured (never a failure); "no data" stays as it is."""
    return verdict.verdict if verdict.checked or verdict.verdict == NO_DATA else f"not checked at {profile}"


def format_verdicts(verdicts: list[Verdict], profile: str) -> str:
    lines = []
    for v in verdicts:
        mark = {"holds": "HOLDS", "fails": "FAILS", "not shown": "NOT SHOWN", NO_DATA: "NO DATA"}[v.verdict]
        if shown_verdict(v, profile) != v.verdict:
            mark, suffix = "NOT CHECKED", f"  (not checked at {profile}; measured: {v.verdict})"
        else:
            suffix = "" if v.checked else f"  (not checked at {profile})"
        lines.append(f"  [{mark:>11}] {v.claim}\n                {v.detail}{suffix}")
    return "\n".join(lines)


# Invocations kept in an experiment's meta file: a re-run that finds its runs cached takes seconds, and the history
# keeps the invocation that computed them.
KEPT_INVOCATIONS = 5


def invocations(meta: dict | None) -> list[dict]:
    """The invocations recorded in a meta file, oldest first (one for files written before they were kept)."""
    if not meta:
        return []
    return meta.get("invocations") or [{k: meta[k] for k in ("seeds", "seconds", "finished", "command")}]


class InputsProblem(Exception):
    """The pre-flight check found inputs that would fail or mislead a run; its lines say which and what to do."""


def check_experiments(experiments: list[Experiment], ctx: Context, verbose: bool = False,
                      processes: int | None = None) -> list:
    """The pre-flight check of several experiments at once, before any of them computes: every key left to set
    (an experiment whose plan cannot be built names it) and every input problem of all of them in one report
    (InputsProblem), since a paper-scale `all` would otherwise stop at the first after days of the tables before
    it. Returns their planned specs."""
    from repro.preflight import ABSENT, OK, PROBLEM, preflight

    specs, problems, planned = [], [], {}
    for experiment in experiments:
        try:
            planned[experiment.name] = planned_specs(experiment, ctx)
            specs += planned[experiment.name]
            if experiment.inputs is not None:
                experiment.inputs(ctx)
        except (OSError, ValueError) as error:  # a key to set, a file it names: a user's input, like cli's
            if os.environ.get("REPRO_DEBUG"):
                raise
            problems.append(f"problem: {experiment.name}: {error}")
    for note in shadowed_changes(ctx, planned):
        print(note, file=sys.stderr)
    findings = preflight(specs, processes, ctx.runs_root)
    for finding in findings:
        if finding.level == ABSENT or (verbose and finding.level == OK):
            print(finding, file=sys.stderr if finding.level == ABSENT else sys.stdout)
    problems += [str(finding) for finding in findings if finding.level == PROBLEM]
    if problems:
        raise InputsProblem("\n".join(problems))
    return specs


def shadowed_changes(ctx: Context, planned: Mapping[str, list]) -> list[str]:
    """A note for each `--set train.KEY=VALUE` that some planned student does not train with: a row's own recipe
    (an architecture's `recipes` entry, Table 5's CutMix optimiser, a fine-tune's section) sets the key after the
    change, so a user who meant every run to change learns which did not, and the key that changes them."""
    from repro.config import set_argument
    from repro.specs import ADDED_OPTIONS

    added = ADDED_OPTIONS["train"]
    notes = []
    for dotted, value in ctx.overrides.items():
        section, _, key = dotted.partition(".")
        if section != "train" or "." in key or key == "init":  # a spec names the run init starts from by its spec
            continue
        missed = {name: {spec.hash for spec in specs if spec.kind == "train"
                         and spec.body["train"].get(key, added.get(key)) != value} for name, specs in planned.items()}
        missed = {name: hashes for name, hashes in missed.items() if hashes}
        if not missed:
            continue
        recipes = [f"recipes.{name}.{key}" for name, recipe in ctx.config.get("recipes", {}).items() if key in recipe]
        notes.append(f"note: {set_argument(dotted, value)} does not reach {len(set().union(*missed.values()))} "
                     f"planned training runs, whose rows set their own {key} "
                     f"({', '.join(f'{name}: {len(hashes)}' for name, hashes in missed.items())})"
                     + (f"; the recipes' keys are {', '.join(recipes)}" if recipes else ""))
    return notes


def with_claim_seeds(experiment: Experiment, ctx: Context) -> Context:
    """`ctx` with the seeds `experiment` runs: at least its `claim_seeds` at this profile where more than one seed
    is asked."""
    seeds = experiment.claim_seeds.get(ctx.profile, 0)
    if len(ctx.seeds) < 2 or seeds <= len(ctx.seeds):
        return ctx
    return replace(ctx, seeds=list(range(seeds)))


def planned_specs(experiment: Experiment, ctx: Context) -> list:
    """The specs of the runs `experiment` computes under `ctx` (their inputs not listed); none if unimplemented."""
    if not experiment.implemented or experiment.plan is None:
        return []
    return experiment.plan(with_claim_seeds(experiment, ctx))


def experiment_plan(experiment: Experiment, ctx: Context, specs: list | None = None) -> str:
    """The runs `experiment` needs under `ctx` (its `planned_specs`, unless given), computing nothing (`python -m
    repro EXP --plan`)."""
    from repro.plan import plan_lines

    if not experiment.implemented:
        return f"{experiment.name}: not implemented yet"
    specs = planned_specs(experiment, ctx) if specs is None else specs
    if not specs:
        return f"{experiment.name}: needs no cached run"
    lines = plan_lines(specs, ctx.runs_root)
    runs = [line for line in lines[1:] if not line.startswith("released")]
    done = sum(1 for line in runs if " cached " in line)
    return "\n".join([f"{experiment.name} ({experiment.paper_ref}): {len(runs)} runs, {done} cached", *lines])


def runs_record(experiment: Experiment, ctx: Context) -> dict:
    """What the results are computed from: how many cached runs the experiment reads, the wall seconds that
    computing them took (each run's last session; a run shared with other experiments counts in each of them), the
    machines that computed them (runs per kind of CPU and accelerator: kinds round differently) and one digest of
    every run's hash (inputs included), which `plan_state` compares with the current code's plan.
    Under --rows the digest is left out: the results keep other invocations' rows."""
    from repro.plan import with_inputs
    from repro.runs import Run

    specs = with_inputs(planned_specs(experiment, ctx))
    metrics = [run.metrics for spec in specs if (run := Run(spec, ctx.runs_root)).done]
    machines = Counter(" + ".join(m.get("computed_on") or ["not recorded"]) for m in metrics)
    return {"runs": len(metrics),
            "runs_seconds": round(sum(float(m.get("wall_seconds_last_session", 0.0)) for m in metrics), 1),
            "computed_on": dict(machines.most_common()),
            "plan_digest": None if ctx.rows else _digest(specs)}


def _digest(specs: list) -> str:
    return hashlib.sha256("\n".join(sorted(spec.hash for spec in specs)).encode()).hexdigest()[:16]


def experiment_command(name: str, profile: str, seeds: int, overrides: Mapping, rows: tuple[str, ...] = ()) -> str:
    """The command line that computes an experiment's results as an invocation records it, and reruns them."""
    return " ".join(["python -m repro", name, "--profile", profile, "--seeds", str(seeds)] +
                    [set_argument(key, value) for key, value in overrides.items()] +
                    ([f"--rows {','.join(rows)}"] if rows else []))


PLAN_CURRENT, PLAN_DIFFERS, PLAN_UNRECORDED = "current", "stale", "unverified"


def plan_state(experiment: Experiment, profile: str, meta: dict | None, runs_root: Path) -> tuple[str, str]:
    """Whether results (their meta file) were computed from the runs the current code plans for `profile`, the
    seeds and the --set changes they record: PLAN_CURRENT, PLAN_DIFFERS (the code, the profile or an input file
    changed since: rerun them) or PLAN_UNRECORDED (written before the record or under --rows, computed from no
    cached run, or the plan cannot be listed here); with a sentence saying so. Only the runs are compared: a change
    to an experiment's own tabulating code shows when it is rerun."""
    from repro.config import profile_config
    from repro.plan import with_inputs

    recorded = (meta or {}).get("plan_digest")
    if recorded is None:
        return PLAN_UNRECORDED, ("the runs behind these results were not recorded (results written before the "
                                 "record, or under --rows): rerunning the experiment without --rows records them")
    seeds, overrides = list(meta["seeds"]), meta.get("overrides", {})
    sets = "".join(f" {set_argument(key, value)}" for key, value in overrides.items())
    try:
        ctx = Context(profile, with_changes(profile_config(profile), overrides), seeds, Path(runs_root),
                      Path("results"))
        specs = with_inputs(planned_specs(experiment, ctx))
    except (OSError, ValueError) as error:  # a missing input (a dataset elsewhere) or a key the code no longer has
        return PLAN_UNRECORDED, f"the current plan{sets} cannot be listed here to check these results ({error})"
    if not specs:
        return PLAN_UNRECORDED, f"computed from no cached run at {profile}{sets}, so no plan vouches for them"
    if (current := _digest(specs)) == recorded:
        return PLAN_CURRENT, f"computed from the runs the current code plans at {profile}{sets} (digest {recorded})"
    return PLAN_DIFFERS, (f"computed from other runs than the current code plans at {profile}{sets} (digest "
                          f"{recorded}, now {current}: the code, the profile or an input file changed since); "
                          f"rerun: {experiment_command(experiment.name, profile, len(seeds), overrides)}")


def with_other_rows(measured: pd.DataFrame, previous: pd.DataFrame | None, rows: tuple[str, ...]) -> pd.DataFrame:
    """Under --rows: the chosen settings' new measurements, and the other settings' rows as the results folder
    held them (the recorded invocations say which command measured which)."""
    if previous is None or "setting" not in previous:
        return measured
    kept = previous[~previous["setting"].isin(rows)]
    return pd.concat([kept, measured], ignore_index=True) if len(kept) else measured


def experiment_report(experiment: Experiment, ctx: Context) -> str:
    """The experiment's diagnostics; under --rows from cached runs only, since a report may read other rows'."""
    from repro.runs import RunNotCached, only_cached

    if experiment.report is None:
        return ""
    if not ctx.rows:
        return experiment.report(ctx)
    try:
        with only_cached():
            return experiment.report(ctx)
    except RunNotCached as missing:
        return f"(report left out: it reads {missing}, which --rows {','.join(ctx.rows)} does not compute)"


def run_experiment(experiment: Experiment, ctx: Context, inputs_checked: bool = False) -> dict:
    """Computes `experiment` and writes its results; `inputs_checked` where the caller's pre-flight check
    (check_experiments) already covered it, as `all`'s does for every experiment, so that a paper-scale ImageNet is
    not listed again for each."""
    if not experiment.implemented:
        raise NotImplementedExperiment(f"{experiment.name} ({experiment.paper_ref}) is not implemented yet: "
                                       f"{experiment.missing or 'no module code'}")
    started = time.time()
    if (raised := with_claim_seeds(experiment, ctx)) is not ctx:
        print(f"{experiment.name}: {len(raised.seeds)} seeds, not {len(ctx.seeds)}: its claims need them "
              f"at {ctx.profile} (claim_seeds)", file=sys.stderr, flush=True)
        ctx = raised
    if not inputs_checked:
        check_experiments([experiment], ctx)
    collected = experiment.collect(ctx)  # every rank of a torchrun job: its training runs are collective
    if int(os.environ.get("RANK", "0")) != 0:
        return {}  # rank 0 alone writes the results
    if not isinstance(collected, Collected):
        collected = Collected(collected)
    measured = collected.measured
    if ctx.rows:
        measured = with_other_rows(measured, results.read_measurements(ctx.out_dir, experiment.name,
                                                                       experiment.key_columns), ctx.rows)
    summary = results.summarise(measured, experiment.name, keys=experiment.key_columns)
    title = f"{experiment.paper_ref} ({ctx.profile} profile): {experiment.title}"
    report = experiment_report(experiment, ctx)
    verdicts = verdicts_for(experiment, measured, ctx.profile)
    with results.staged_results(ctx.out_dir, experiment.name) as stage:
        staged = results.write_results(measured, summary, stage, experiment.name, collected.tables,
                                       keys=experiment.key_columns)
        for name, write in collected.files.items():
            write(stage / name)
        png = stage / f"{experiment.name}.png"
        if experiment.plot is not None:
            experiment.plot(summary, measured, collected.tables, png, title)
        else:
            results.bar_plot(summary, png, title, experiment.metrics, experiment.key_columns)
        elapsed = time.time() - started
        invocation = {"seeds": ctx.seeds, "seconds": round(elapsed, 1), "finished": time.strftime("%Y-%m-%d %H:%M"),
                      "command": experiment_command(experiment.name, ctx.profile, len(ctx.seeds), ctx.overrides,
                                                    ctx.rows)}
        results.write_meta(stage, experiment.name, {**invocation, "overrides": ctx.overrides,
                                                    **runs_record(experiment, ctx), "report": report,
                                                    "invocations": (
            invocations(results.read_meta(ctx.out_dir, experiment.name)) + [invocation])[-KEPT_INVOCATIONS:]})
    paths = {name: ctx.out_dir / path.name for name, path in {**staged, "png": png}.items()}
    print(f"\n{experiment.paper_ref} — {experiment.title} [{ctx.profile}, seeds {ctx.seeds}]")
    print(results.format_summary(summary, experiment.key_columns))
    if report:
        print(report)
    if verdicts:
        print("Claims:")
        print(format_verdicts(verdicts, ctx.profile))
    print(f"wrote {paths['table']}, {paths['seeds']}, {paths['png']} ({elapsed:.0f}s)")
    return {"paths": paths, "verdicts": verdicts, "seconds": elapsed}


def _markdown_table(summary: pd.DataFrame, keys=results.KEY) -> str:
    lines = ["| " + " | ".join(keys) + " | metric | reproduced (mean ± std, n) | paper | diff |",
             "|" + "---|" * (len(keys) + 4)]
    for row in summary.itertuples(index=False):
        paper = "" if pd.isna(row.reported) else f"{row.reported:g}"
        diff = "" if pd.isna(row.reported) else f"{row.mean - row.reported:+.2f}"
        lines.append("| " + " | ".join(str(getattr(row, key)) for key in keys) +
                     f" | {row.metric} | {row.mean:.2f} ± {row.std:.2f} ({row.n}) | {paper} | {diff} |")
    return "\n".join(lines)


def compare(experiments: dict[str, Experiment], profile: str, results_root: Path, runs_root: Path,
            markdown: Path | None = None) -> int:
    """Print reproduced vs reported and every claim's verdict; 1 if a checked claim fails, else 0.

    With `markdown`, the same report is also written there as a Markdown document."""
    out_dir = Path(results_root) / profile
    failed = []
    shown = 0
    md = [f"# Results at the `{profile}` profile", "",
          f"Written by `python -m repro compare --profile {profile} --markdown ...` from `{out_dir}`.", ""]
    for experiment in experiments.values():
        measured = results.read_measurements(out_dir, experiment.name, experiment.key_columns)
        if measured is None:
            state = "not implemented yet" if not experiment.implemented else "no results yet"
            print(f"\n{experiment.name} ({experiment.paper_ref}): {state} at profile {profile}")
            md += [f"## {experiment.name} ({experiment.paper_ref}): {state}", ""]
            continue
        shown += 1
        stale = results.out_of_step(out_dir, experiment.name)
        if stale:
            print(f"\n{experiment.name}: {', '.join(stale)} in {out_dir} differ from what its meta file recorded "
                  f"(a write was interrupted, or a file edited): rerun python -m repro {experiment.name}")
            failed.append(f"{experiment.name}: result files out of step")
            md += [f"## {experiment.name} ({experiment.paper_ref}): result files out of step, rerun it", ""]
            continue
        summary = results.summarise(measured, experiment.name, keys=experiment.key_columns)
        meta = results.read_meta(out_dir, experiment.name)
        print(f"\n{experiment.name} ({experiment.paper_ref}) — {experiment.title}")
        print(results.format_summary(summary, experiment.key_columns))
        plan, plan_note = plan_state(experiment, profile, meta, runs_root)
        if plan != PLAN_CURRENT:
            print(f"{experiment.name}: {plan_note}")
        verdicts = verdicts_for(experiment, measured, profile)
        if verdicts:
            print(format_verdicts(verdicts, profile))
        failed += [f"{experiment.name}: {v.claim}" for v in verdicts if v.checked and v.verdict == "fails"]
        md += [f"## {experiment.name} ({experiment.paper_ref}) — {experiment.title}", ""]
        if meta:
            md += [f"Seeds {meta['seeds']}. Invocations, oldest first (each reuses the runs already in the cache, "
                   "so only the one that computed a run spent its time):", ""]
            md += [f"- `{i['command']}` finished {i['finished']} after {i['seconds'] / 60:.1f} min"
                   for i in invocations(meta)] + [""]
        md += [f"Runs: {plan_note}", ""]
        if meta and meta.get("report"):
            md += ["```", meta["report"], "```", ""]
        md += [_markdown_table(summary, experiment.key_columns), ""]
        md += [f"- **{shown_verdict(v, profile)}**: "
               f"{v.claim} — {v.detail}" + ("" if v.checked else f" (not checked at {profile})") for v in verdicts]
        md += [""]
    print(f"\n{shown} experiment(s) with results at profile {profile}; {len(failed)} checked claim(s) failing")
    for line in failed:
        print(f"  FAILS {line}")
    if markdown is not None:
        Path(markdown).write_text("\n".join(md))
        print(f"wrote {markdown}")
    return 1 if failed else 0
