"""Convergence (beyond the paper): does ReLabel's gain over the original labels persist as the students converge?

Table 3's original-label, label-smoothing (0.1) and ReLabel ResNet-50 students, each trained for every length of
the profile's `convergence.epochs` (proxy 4-16, smoke 1-2, paper 75-300; the recipe's own length is among them, so
those students are Table 3's cached runs); the rest of the recipe is unchanged (the cosine spans each length). At
the proxy profile's 4 epochs ReLabel gains +5.7 pp where the paper's converged students gain +1.4 pp. Writes
convergence_gains.csv: per length, ReLabel − original and label smoothing − original over paired seeds, with
their 95% t-intervals, beside the paper's gains at its 300 epochs. The claims (all at the longest length run):
- ReLabel > original labels: the gain persists (paired seeds, the interval above 0);
- the gain is between 0 and 3 pp: it is in the paper's regime (+1.4 pp) rather than the short schedule's;
- the gain shrinks: ReLabel's gain at the longest length is below its gain at the shortest (per-seed gains
  paired; the interval of their difference below 0);
- ReLabel > label smoothing, Table 3's ordering.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from repro import results
from repro.claims import NO_DATA, Claim, band_verdict, interval, interval_verdict
from repro.config import with_changes
from repro.experiment import Collected, Context, Experiment
from repro.pipeline import students_per_seed, train_student
from repro.plotting import plt, save_figure
from repro.tables.table3 import SUPERVISIONS

ORIGINAL, RELABEL, SMOOTHING = "original", "relabel", "label_smoothing_0.1"
SETTINGS = (ORIGINAL, SMOOTHING, RELABEL)
KEYS = ("model", "setting", "epochs")
PAPER_REGIME_PP = 3.0  # the largest gain still called "the paper's regime" (its own: +1.4 pp)


def students(ctx: Context) -> list[tuple[str, int, dict]]:
    """(setting, epochs, changes) of every student: Table 3's changes and the length."""
    return [(setting, int(epochs), {**SUPERVISIONS[setting], "train.epochs": int(epochs)})
            for epochs in ctx.config["convergence"]["epochs"] for setting in SETTINGS]


def plan(ctx: Context) -> list:
    return [spec for *_, changes in students(ctx)
            for spec in students_per_seed(ctx.config, ctx.seeds, changes, ctx.runs_root)]


def collect(ctx: Context) -> Collected:
    model, rows, jobs = ctx.config["train"]["model"]["name"], [], students(ctx)
    for i, (setting, epochs, changes) in enumerate(jobs, 1):
        for seed in ctx.seeds:
            print(f"== convergence {i}/{len(jobs)}: {setting} {epochs} epochs seed {seed}", file=sys.stderr,
                  flush=True)
            metrics = train_student(with_changes(ctx.config, {**changes, "seed": seed}), ctx.runs_root)
            rows.append({"model": model, "setting": setting, "epochs": epochs, "seed": seed,
                         "metric": "imagenet_top1", "value": metrics["imagenet_top1"]})
    measured = results.measurements(rows, keys=KEYS)
    return Collected(measured, {"gains": gains(measured)})


def _per_seed(measured: pd.DataFrame) -> pd.DataFrame:
    """Top-1 per seed (rows) and (setting, epochs) (columns)."""
    top1 = measured[measured.metric == "imagenet_top1"].assign(epochs=lambda m: m.epochs.astype(int))
    return top1.pivot_table(index="seed", columns=["setting", "epochs"], values="value")


def _lengths(per_seed: pd.DataFrame, *settings: str) -> list[int]:
    """The lengths at which every one of `settings` was run, shortest first."""
    return sorted(set.intersection(*({e for s, e in per_seed.columns if s == setting} for setting in settings)))


def _gain(per_seed: pd.DataFrame, setting: str, epochs: int, other: str = ORIGINAL) -> pd.Series:
    """`setting` − `other` at `epochs`, per seed (the seeds that have both)."""
    return (per_seed[(setting, epochs)] - per_seed[(other, epochs)]).dropna()


def _verdict(values, ok, what: str) -> tuple[str, str]:
    """A claim on the mean of per-seed `values` (the 95% interval's three-way reading of `repro.claims`)."""
    if len(values) == 0:
        return NO_DATA, f"no paired seeds for {what}"
    verdict, est = interval_verdict(values, ok)
    return verdict, f"{what} = {est}"


def _paper_gain(setting: str) -> float:
    reported = results.reported_for("table3").query("metric == 'imagenet_top1'").set_index("setting")["value"]
    return float(reported[setting] - reported[ORIGINAL])


def gains(measured: pd.DataFrame) -> pd.DataFrame:
    """Per length and supervision: its gain over the original labels (paired seeds) and the 95% interval."""
    per_seed, rows = _per_seed(measured), []
    for epochs in _lengths(per_seed, *SETTINGS):
        for setting in (RELABEL, SMOOTHING):
            est = interval(_gain(per_seed, setting, epochs))
            rows.append({"epochs": epochs, "setting": setting, "gain": est.mean, "low": est.low, "high": est.high,
                         "n": est.n, "paper_gain_300_epochs": _paper_gain(setting)})
    return pd.DataFrame(rows)


def plot(summary: pd.DataFrame, measured: pd.DataFrame, tables: dict, path: Path, title: str) -> None:
    fig, (ax, gain_ax) = plt.subplots(1, 2, figsize=(12, 5))
    top1 = summary[summary.metric == "imagenet_top1"].assign(epochs=lambda s: s.epochs.astype(int))
    for setting, color in zip(SETTINGS, ("0.3", "#55A868", "#C44E52")):
        part = top1[top1.setting == setting].sort_values("epochs")
        ax.errorbar(part.epochs, part["mean"], yerr=part["std"], fmt="o-", color=color, capsize=3, label=setting)
    ax.set_ylabel("student's val top-1 (%, mean ± std over seeds)")
    for setting, color in ((RELABEL, "#C44E52"), (SMOOTHING, "#55A868")):
        part = tables["gains"][tables["gains"].setting == setting]
        gain_ax.errorbar(part.epochs, part.gain, yerr=[part.gain - part.low, part.high - part.gain], fmt="o-",
                         color=color, capsize=3, label=f"{setting} − original (95% CI, paired seeds)")
        gain_ax.axhline(_paper_gain(setting), color=color, ls="--", lw=1,
                        label=f"paper, 300 epochs: {_paper_gain(setting):+.1f} pp")
    gain_ax.axhline(0, color="0.3", lw=0.8)
    gain_ax.set_ylabel("gain over the original labels (pp)")
    for a in (ax, gain_ax):
        a.set_xscale("log", base=2)
        a.set_xticks(sorted(top1.epochs.unique()), [str(e) for e in sorted(top1.epochs.unique())])
        a.set_xlabel("training length (epochs, log2)")
        a.grid(alpha=0.3)
        a.legend(fontsize=8, loc="best")
    save_figure(fig, path, title)


def in_paper_regime(values, what: str) -> tuple[str, str]:
    """The gain lies in [0, PAPER_REGIME_PP]: not negative, as the paper's, and no larger than its regime allows."""
    if len(values) == 0:
        return NO_DATA, f"no paired seeds for {what}"
    verdict, est = band_verdict(values, 0.0, PAPER_REGIME_PP)
    return verdict, f"{what} = {est}"


def at_longest(setting: str, ok, other: str = ORIGINAL, judge=None):
    """A check of `setting` − `other` per seed at the longest length that has both: `ok` read on the interval's
    ends, or `judge(values, what) -> (verdict, detail)` where given."""
    def check(measured: pd.DataFrame) -> tuple[str, str]:
        per_seed = _per_seed(measured)
        lengths = _lengths(per_seed, setting, other)
        if not lengths:
            return NO_DATA, f"needs {setting} and {other} at one length"
        longest = lengths[-1]
        what = f"{longest} epochs: {setting} − {other}"
        values = _gain(per_seed, setting, longest, other)
        return judge(values, what) if judge is not None else _verdict(values, ok, what)
    return check


def gain_shrinks(measured: pd.DataFrame) -> tuple[str, str]:
    """ReLabel's per-seed gain at the longest length minus its gain at the shortest, below 0."""
    per_seed = _per_seed(measured)
    lengths = _lengths(per_seed, RELABEL, ORIGINAL)
    if len(lengths) < 2:
        return NO_DATA, "needs relabel and original at two lengths"
    change = (_gain(per_seed, RELABEL, lengths[-1]) - _gain(per_seed, RELABEL, lengths[0])).dropna()
    return _verdict(change, lambda d: d < 0, f"relabel's gain at {lengths[-1]} − its gain at {lengths[0]} epochs")


EXPERIMENT = Experiment(
    name="convergence",
    title="ReLabel's gain over the original labels against the students' training length (beyond the paper)",
    paper_ref="Convergence",
    collect=collect,
    plan=plan,
    plot=plot,
    key_columns=KEYS,
    profile_sized_keys=("epochs",),
    metrics=["imagenet_top1"],
    claims=[Claim("ReLabel > original labels at the longest length", kind="custom",
                  check=at_longest(RELABEL, lambda d: d > 0)),
            Claim(f"ReLabel's gain at the longest length is in the paper's regime: between 0 and "
                  f"{PAPER_REGIME_PP:g} pp (the paper's: +1.4)",
                  kind="custom", check=at_longest(RELABEL, None, judge=in_paper_regime)),
            Claim("ReLabel's gain shrinks from the shortest to the longest length", kind="custom",
                  check=gain_shrinks),
            Claim("ReLabel > label smoothing at the longest length", kind="custom",
                  check=at_longest(RELABEL, lambda d: d > 0, other=SMOOTHING))],
)
