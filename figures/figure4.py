"""Figure 4: the student's top-1 with ReLabel against the top-1 of the machine annotator that made its labels.

Annotators of several strengths (`repro.sweeps.annotator_sweep`: at paper scale EfficientNet-B1 to L2 and a
ResNeXt WSL; at the embedded scale ResNets with fewer channels or epochs than the profile's annotator, which is the
strongest), each
generating the training label maps of a ReLabel student of the profile's recipe; the original-label student is
the horizontal line. The annotator's top-1 is its own val accuracy (`repro.pipeline.annotator_top1`). The
paper: the student follows its annotator, and a weak annotator (EfficientNet-B1: 76.1%) gives a student below
the original labels (77.5%). Writes figure4_points.csv (one row per annotator: both accuracies over seeds).
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pandas as pd
from scipy import stats

from repro import results
from repro.claims import FAILS, HOLDS, NO_DATA, Claim
from repro.config import with_changes
from repro.experiment import Collected, Context, Experiment
from repro.pipeline import annotator_top1, annotator_top1_spec, students_per_seed, train_student
from repro.plotting import plt, save_figure
from repro.sweeps import annotator_sweep

ORIGINAL = "original"
PREFIX = "annotator_"


def collect(ctx: Context) -> Collected:
    cfg = ctx.config
    student = cfg["train"]["model"]["name"]
    rows = []
    sweep = annotator_sweep(cfg)
    for i, (name, changes) in enumerate(sweep.items(), 1):
        annotator_cfg = with_changes(cfg, changes)
        print(f"== figure4 annotator {i}/{len(sweep)}: {name}", file=sys.stderr, flush=True)
        top1 = annotator_top1(annotator_cfg, ctx.runs_root)
        for seed in ctx.seeds:
            metrics = train_student(with_changes(annotator_cfg, {"supervision.mode": "relabel", "seed": seed}),
                                    ctx.runs_root)
            rows += [{"model": student, "setting": PREFIX + name, "seed": seed, "metric": "imagenet_top1",
                      "value": metrics["imagenet_top1"]},
                     {"model": student, "setting": PREFIX + name, "seed": seed, "metric": "annotator_top1",
                      "value": top1}]
    for seed in ctx.seeds:
        metrics = train_student(with_changes(cfg, {"supervision.mode": "original", "seed": seed}), ctx.runs_root)
        rows.append({"model": student, "setting": ORIGINAL, "seed": seed, "metric": "imagenet_top1",
                     "value": metrics["imagenet_top1"]})
    measured = results.measurements(rows)
    return Collected(measured, {"points": _points(measured)})


def plan(ctx: Context) -> list:
    cfg, specs = ctx.config, []
    for changes in annotator_sweep(cfg).values():
        annotator_cfg = with_changes(cfg, changes)
        specs.append(annotator_top1_spec(annotator_cfg))
        specs += students_per_seed(annotator_cfg, ctx.seeds, {"supervision.mode": "relabel"})
    return specs + students_per_seed(cfg, ctx.seeds, {"supervision.mode": "original"})


def _points(measured: pd.DataFrame) -> pd.DataFrame:
    """One row per setting, in sweep order: the student's top-1 (mean, std, n over seeds) and the annotator's."""
    student = measured[measured.metric == "imagenet_top1"].groupby("setting", sort=False)["value"]
    annotator = measured[measured.metric == "annotator_top1"].groupby("setting")["value"].mean()
    points = pd.DataFrame({"student_top1": student.mean(), "student_std": student.std().fillna(0.0),
                           "seeds": student.count()})
    points["annotator_top1"] = annotator.reindex(points.index)  # none for the original-label student
    return points.rename_axis("setting").reset_index()


def plot(summary: pd.DataFrame, measured: pd.DataFrame, tables: dict, path: Path, title: str) -> None:
    points = tables["points"]
    sweep = points[points.setting != ORIGINAL].sort_values("annotator_top1")
    original = points[points.setting == ORIGINAL].iloc[0]
    fig, (ax, paper_ax) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [1.5, 1]})
    ax.errorbar(sweep.annotator_top1, sweep.student_top1, yerr=sweep.student_std, fmt="o-", color="#4C72B0",
                capsize=3, label="ReLabel student (mean ± std over seeds)")
    for i, row in enumerate(sweep.itertuples(index=False)):  # labels alternate below and above their points
        ax.annotate(row.setting[len(PREFIX):], (row.annotator_top1, row.student_top1), textcoords="offset points",
                    xytext=(5, -12 if i % 2 == 0 else 8), fontsize=8)
    ax.axhline(original.student_top1, color="0.3", ls="--", label="original labels")
    if original.student_std > 0:
        ax.axhspan(original.student_top1 - original.student_std, original.student_top1 + original.student_std,
                   color="0.5", alpha=0.15)
    ax.margins(x=0.15, y=0.3)
    ax.set_xlabel("machine annotator's val top-1 (%)")
    ax.set_ylabel("student's val top-1 (%)")
    ax.set_title("reproduced", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")

    reported = results.reported_for("figure4")
    # the paper's original-label ResNet-50 (Section 3.3 quotes Table 3's number)
    vanilla = results.reported_for("table3").query("setting == 'original' and metric == 'imagenet_top1'")["value"]
    names = [s[len(PREFIX):] for s in reported.setting]
    paper_ax.plot(range(len(reported)), reported["value"], "D", color="#C44E52", ms=8,
                  label="ReLabel student (paper)")
    for i, value in enumerate(reported["value"]):
        paper_ax.annotate(f"{value:g}", (i, value), textcoords="offset points", xytext=(8, -3), fontsize=8)
    if len(vanilla):
        paper_ax.axhline(float(vanilla.iloc[0]), color="0.3", ls="--", label="original labels (paper)")
    paper_ax.set_xticks(range(len(reported)), names)
    paper_ax.set_xlim(-0.5, len(reported) - 0.5)
    paper_ax.set_xlabel("machine annotator (weaker to stronger)")
    paper_ax.set_ylabel("ResNet-50 ImageNet top-1 (%)")
    paper_ax.set_title("paper (the points it reports)", fontsize=10)
    paper_ax.grid(alpha=0.3)
    paper_ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path, title)


def follows_annotator(measured: pd.DataFrame) -> tuple[str, str]:
    """Spearman correlation of student and annotator top-1 over the sweep > 0, and the weakest annotator's
    student below the original-label student (means over seeds)."""
    points = _points(measured)
    sweep = points[points.setting != ORIGINAL].dropna(subset=["annotator_top1"])
    original = points[points.setting == ORIGINAL]
    if len(sweep) < 2 or original.empty:
        return NO_DATA, "needs two annotators and the original-label student"
    with warnings.catch_warnings():  # tied accuracies leave the correlation undefined: a nan, which fails
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        rho = stats.spearmanr(sweep.annotator_top1, sweep.student_top1).statistic
    weakest = sweep.loc[sweep.annotator_top1.idxmin()]
    below = weakest.student_top1 < original.student_top1.iloc[0]
    verdict = HOLDS if rho > 0 and below else FAILS
    return verdict, (f"Spearman rho = {rho:+.2f} over {len(sweep)} annotators; weakest "
                     f"({weakest.setting[len(PREFIX):]}, {weakest.annotator_top1:.1f}%) gives "
                     f"{weakest.student_top1:.2f} vs original labels {original.student_top1.iloc[0]:.2f}")


EXPERIMENT = Experiment(
    name="figure4",
    title="student top-1 against annotator top-1 over a sweep of annotators",
    paper_ref="Figure 4",
    collect=collect,
    plot=plot,
    plan=plan,
    metrics=["imagenet_top1", "annotator_top1"],
    # the sweep's annotators are named by their training length (`<model>w<stem>_<epochs>ep`), which the profile sets
    profile_sized_keys=("setting",),
    claims=[Claim("the student's accuracy follows its annotator's, and the weakest annotator's student falls "
                  "below the original labels", kind="custom", check=follows_annotator)],
)
