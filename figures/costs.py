"""Section 3.3: what ReLabel costs, in time and storage.

- Generation: the wall time of the annotator's pass over the training images (the cached label-map run's
  `generation_seconds`, on one device) as a share of one original-label training run of the student (its
  `train_seconds` in device-seconds: times the GPUs it ran on, `repro.costs.device_seconds`); the paper: 10
  GPU-hours against 328, 3.3%. At the embedded scale the annotator is trained and run on a CPU at a higher
  resolution than the student, with a small student recipe, so the share differs from ImageNet's; the claim allows
  up to 25%. The annotator's own training is reported beside it (the paper downloads its annotator).
- LabelPooling: an in-process micro-benchmark on one batch of the student's recipe (`repro.costs.
  pooling_benchmark`): reading the batch's maps plus pooling them, against one training step; the paper: 0.5%
  more training time. The ReLabel student's measured train_seconds against the original one's is reported too.
- Storage: ImageNet-size maps (1,281,167 images, 15x15, 1000 classes) at each k and dtype, in GiB, from
  `repro.labelmaps.quantize.bytes_per_image` (the packed store) and the released format ([2, k, H, W] fp32), and
  the compact store at top-5 as measured on Lite0 maps (its size depends on the maps); the paper: 10 GB for top-5
  (the released format), 1.0 TB for full maps.
- Regime: the paper's cost ratios beside the profile's (`repro.costs.regime_table`): the student's epochs, the
  annotator's labelling pass and each Figure 6 KD teacher's forward per student training step (FLOPs from the
  models' shapes, `repro.costs.flops_regime`), the generation's share of one training (FLOPs and wall time), a
  KD epoch against a ReLabel epoch (wall time: the paper's GPU-days; here Figure 6's KD students where they are
  cached, else blank) and after how many epochs a KD student's teacher passes outweigh the generation. The paper
  trains 300 epochs, past every teacher's break-even; docs/regime.md reads the table.
Writes costs_storage.csv (the storage table) and costs_regime.csv beside the PNG. The paper's numbers are listed
in reported.csv under "section3.3" and "figure6".
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from repro import results
from repro.claims import Claim
from repro.config import profile_config, with_changes
from repro.costs import (IMAGENET_CLASSES, device_seconds, flops_regime, imagenet_storage, pooling_benchmark,
                         regime_table)
from repro.data.imagenet import open_imagenet
from repro.experiment import Collected, Context, Experiment
from repro.contention import busy_timings
from repro.figures.figure6 import kd_student_changes, timed_runs
from repro.pipeline import (annotator_run, data_root, generated_labelmaps, generated_labelmaps_spec, labelmaps_dir,
                            student_spec, students_per_seed, train_student)
from repro.plotting import plt, save_figure
from repro.runs import Run
from repro.sweeps import kd_teachers

REPORTED = "section3.3"  # the experiment name of the paper's Section 3.3 numbers in reported.csv
GENERATION_SHARE_LIMIT = 0.25
POOLING_SHARE_LIMIT = 0.05
STORAGE_TOLERANCE_GB = 1.0


def _reported(model: str, setting: str) -> float:
    table = results.reported_for(REPORTED)
    return float(table[(table.model == model) & (table.setting == setting)]["value"].iloc[0])


def collect(ctx: Context) -> Collected:
    cfg, seed = ctx.config, ctx.seeds[0]
    student = cfg["train"]["model"]["name"]
    rows = []

    def add(model, setting, metric, value, row_seed=seed):
        rows.append({"model": model, "setting": setting, "seed": row_seed, "metric": metric, "value": value})

    generation = generated_labelmaps(cfg, ctx.runs_root).metrics["generation_seconds"]
    add("annotator", "label_map_generation", "wall_seconds", generation)
    if cfg["annotator"]["source"] == "train":
        add("annotator", "annotator_training", "wall_seconds", annotator_run(cfg, ctx.runs_root).metrics[
            "train_seconds"])  # as measured; the ratios below are in device-seconds (GPU-seconds on GPUs)
    for run_seed in ctx.seeds:
        original = train_student(with_changes(cfg, {"supervision.mode": "original", "seed": run_seed}),
                                 ctx.runs_root)
        relabel = train_student(with_changes(cfg, {"supervision.mode": "relabel", "seed": run_seed}),
                                ctx.runs_root)
        add(student, "original_training", "wall_seconds", original["train_seconds"], run_seed)
        add(student, "relabel_training", "wall_seconds", relabel["train_seconds"], run_seed)
        add(student, "label_map_generation", "share_of_training", generation / device_seconds(original), run_seed)
        add(student, "relabel_training", "extra_training_time_fraction",
            device_seconds(relabel) / device_seconds(original) - 1.0, run_seed)

    num_classes = open_imagenet(data_root(cfg, ctx.runs_root), cfg["data"]).num_classes
    bench = pooling_benchmark(cfg, labelmaps_dir(cfg, ctx.runs_root), num_classes, seed=seed)
    for key in ("read_seconds", "pool_seconds", "train_step_seconds"):
        add(student, "labelpooling", key, bench[key])
    add(student, "labelpooling", "extra_training_time_fraction",
        (bench["read_seconds"] + bench["pool_seconds"]) / bench["train_step_seconds"])

    storage = imagenet_storage()
    for row in storage.itertuples(index=False):
        if row.layout == "full":
            add("none", "label_maps_full_fp32", "storage_tb", row.gib / 1024)
        elif row.layout == "official":
            add("none", f"label_maps_top{row.topk}_fp32", "storage_gb", row.gib)
        else:
            add("none", f"packed_top{row.topk}_{row.dtype}", "storage_gb", row.gib)
    return Collected(results.measurements(rows), {"storage": storage, "regime": regime(ctx, num_classes)})


def _paper_wall() -> dict:
    """The paper's wall-time ratios: Section 3.3's GPU-hours and Figure 6's GPU-days (KD with B5 and B7; ReLabel's
    13.6 is its whole run)."""
    figure6 = results.reported_for("figure6")
    days = figure6[figure6.metric == "gpu_days"].set_index("setting")["value"]
    relabel_epoch_hours = days["relabel"] * 24 / profile_config("paper")["train"]["epochs"]
    return {"generation_share": PAPER_GENERATION_HOURS / PAPER_TRAINING_HOURS,
            "generation_relabel_epochs": PAPER_GENERATION_HOURS / relabel_epoch_hours,
            "kd_over_relabel": {setting[len("kd_"):]: value / days["relabel"] for setting, value in days.items()
                                if setting.startswith("kd_")}}


def _measured_wall(ctx: Context) -> dict:
    """The profile's wall-time ratios from the cached runs, means over the seeds: generation against the
    original-label student and a ReLabel epoch, and each Figure 6 KD student against the ReLabel student of its
    seed where that KD student is cached (costs does not train them)."""
    cfg = ctx.config
    generation = generated_labelmaps(cfg, ctx.runs_root).metrics["generation_seconds"]
    shares, relabel_epochs, kd = [], [], {}
    for seed in ctx.seeds:
        original = train_student(with_changes(cfg, {"supervision.mode": "original", "seed": seed}), ctx.runs_root)
        relabel = train_student(with_changes(cfg, {"supervision.mode": "relabel", "seed": seed}), ctx.runs_root)
        shares.append(generation / device_seconds(original))
        relabel_epochs.append(generation / (device_seconds(relabel) / relabel["epochs"]))
        for name, changes in kd_teachers(cfg).items():
            student = with_changes(cfg, {**kd_student_changes(cfg, with_changes(cfg, changes)), "seed": seed})
            run = Run(student_spec(student, ctx.runs_root), ctx.runs_root)
            if run.done:
                kd.setdefault(name, []).append(device_seconds(run.metrics) / device_seconds(relabel))
    return {"generation_share": sum(shares) / len(shares),
            "generation_relabel_epochs": sum(relabel_epochs) / len(relabel_epochs),
            "kd_over_relabel": {name: sum(ratios) / len(ratios) for name, ratios in kd.items()}}


def regime(ctx: Context, num_classes: int | None = None) -> pd.DataFrame:
    """The paper's cost ratios beside this profile's (`repro.costs.regime_table`)."""
    cfg = ctx.config
    if num_classes is None:
        num_classes = open_imagenet(data_root(cfg, ctx.runs_root), cfg["data"]).num_classes
    return regime_table(flops_regime(profile_config("paper"), IMAGENET_CLASSES), flops_regime(cfg, num_classes),
                        _paper_wall(), _measured_wall(ctx))


def report(ctx: Context) -> str:
    """The cost regime in one line: the paper's ratios against this profile's (all rows in costs_regime.csv); then
    which of the compared wall times were taken on a busy machine, if any."""
    table = regime(ctx)
    rows = table.set_index(["quantity", "basis"])

    def pair(quantity, basis, fmt):
        return " | ".join(fmt(v) for v in rows.loc[(quantity, basis), ["paper", "reproduced"]])

    def span(suffix, basis):
        """The range over the KD teachers, paper | here."""
        part = table[table.quantity.str.startswith("kd_teacher_") & table.quantity.str.endswith(suffix) &
                     (table.basis == basis)]
        return " | ".join(f"{number(part[c].min())}-{number(part[c].max())}" if part[c].notna().any() else "n/a"
                          for c in ("paper", "reproduced"))

    def number(value):
        return "n/a" if pd.isna(value) else f"{value:.2f}" if value < 10 else f"{value:.0f}"

    def percent(value):
        return "n/a" if pd.isna(value) else f"{value:.1%}"

    regime_line = ("cost regime, paper | here (costs_regime.csv): "
            f"{pair('student_epochs', 'schedule', lambda v: f'{v:.0f}')} epochs; label-map generation "
            f"{pair('generation_share_of_training', 'wall time', percent)} of one training (wall), "
            f"{pair('generation_share_of_training', 'FLOPs', percent)} (FLOPs); the annotator's labelling forward "
            f"{pair('annotator_forward_per_student_step', 'FLOPs', number)} student steps, the KD "
            f"teachers' forward {span('_forward_per_student_step', 'FLOPs')}; a KD epoch "
            f"{span('_kd_epoch_over_relabel_epoch', 'wall time')} ReLabel epochs (wall); the teachers' passes "
            f"outweigh the generation after {span('_break_even_epochs', 'FLOPs')} epochs (FLOPs), "
            f"{span('_break_even_epochs', 'wall time')} (wall)")
    return "\n".join(line for line in (regime_line, busy_timings(timed_runs(ctx))) if line)


def plan(ctx: Context) -> list:
    # the generation it times, which students of released maps do not need
    return [generated_labelmaps_spec(ctx.config)] + [spec for mode in ("original", "relabel") for spec in
                                          students_per_seed(ctx.config, ctx.seeds, {"supervision.mode": mode})]


def plot(summary: pd.DataFrame, measured: pd.DataFrame, tables: dict, path: Path, title: str) -> None:
    means = summary.set_index(["model", "setting", "metric"])["mean"]
    student = summary[summary.setting == "labelpooling"].model.iloc[0]
    fig, (time_ax, storage_ax) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [1, 1.3]})

    shares = {"label-map generation\n/ one training run": (
                  means[(student, "label_map_generation", "share_of_training")],
                  PAPER_GENERATION_HOURS / PAPER_TRAINING_HOURS),
              "LabelPooling (read + pool)\n/ one training step": (
                  means[(student, "labelpooling", "extra_training_time_fraction")],
                  PAPER_POOLING_FRACTION),
              "ReLabel student's extra\ntraining time (whole run)": (
                  means[(student, "relabel_training", "extra_training_time_fraction")], None)}
    y = list(range(len(shares)))[::-1]  # first item on top
    time_ax.barh(y, [100 * v for v, _ in shares.values()], color="#4C72B0", label="reproduced")
    paper = [(100 * p, y[i]) for i, (_, p) in enumerate(shares.values()) if p is not None]
    time_ax.plot(*zip(*paper), "D", color="#C44E52", ms=8, label="paper (ImageNet, GPUs)")
    for i, (value, _) in enumerate(shares.values()):
        time_ax.annotate(f" {100 * value:.1f}%", (max(100 * value, 0), y[i]), ha="left", va="center", fontsize=9)
    time_ax.axvline(0, color="0.3", lw=0.8)
    time_ax.set_yticks(y, list(shares), fontsize=9)
    time_ax.set_xlabel("extra time (%)")
    time_ax.margins(x=0.2)
    time_ax.set_title("time", fontsize=10)
    time_ax.legend(fontsize=8, loc="lower right")

    storage = tables["storage"]
    layouts = [("packed", "fp32"), ("packed", "fp16"), ("packed", "int8"), ("official", "fp32")]
    topks = sorted(storage[storage.layout != "full"].topk.unique())
    width = 0.8 / len(layouts)
    colours = ["#4C72B0", "#55A868", "#8172B2", "#DD8452"]
    for j, ((layout, dtype), colour) in enumerate(zip(layouts, colours)):
        part = storage[(storage.layout == layout) & (storage.dtype == dtype)].set_index("topk").loc[topks]
        label = f"packed store, {dtype}" if layout == "packed" else "released format (fp32 logits + ids)"
        storage_ax.bar([i + (j - 1.5) * width for i in range(len(topks))], part.gib, width, color=colour,
                       label=label)
    full = storage[storage.layout == "full"].gib.iloc[0]
    storage_ax.axhline(full, color="0.3", ls="--", lw=1, label=f"full maps, fp32: {full / 1024:.2f} TiB")
    top5 = topks.index(5)
    storage_ax.plot([top5 + 1.5 * width], [_reported("none", "label_maps_top5_fp32")], "D", color="#C44E52", ms=8,
                    label="paper: top-5, 10 GB")
    storage_ax.plot([len(topks) - 0.5], [_reported("none", "label_maps_full_fp32") * 1024], "v", color="#C44E52",
                    ms=8, label="paper: full maps, 1.0 TB")
    storage_ax.set_yscale("log")
    storage_ax.set_xticks(range(len(topks)), [f"top-{k}" for k in topks])
    storage_ax.set_ylabel("GiB for ImageNet's 1.28M training images (log)")
    storage_ax.set_title("storage (15x15 maps, 1000 classes)", fontsize=10)
    storage_ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_figure(fig, path, title)


def _storage_claim() -> Claim:
    reported = _reported("none", "label_maps_top5_fp32")
    return Claim(f"top-5 fp32 label maps of ImageNet take about {reported:g} GB (released format, GiB)",
                 kind="range", metric="storage_gb", better="label_maps_top5_fp32",
                 low=reported - STORAGE_TOLERANCE_GB, high=reported + STORAGE_TOLERANCE_GB)


PAPER_GENERATION_HOURS = _reported("efficientnet_l2_475", "label_map_generation")
PAPER_TRAINING_HOURS = _reported("resnet50", "vanilla_training_300ep")
PAPER_POOLING_FRACTION = _reported("resnet50", "labelpooling")

EXPERIMENT = Experiment(
    name="costs",
    title="costs: label-map generation share, LabelPooling step-time share, storage",
    paper_ref="Section 3.3",
    collect=collect,
    plot=plot,
    plan=plan,
    report=report,
    metrics=["share_of_training", "extra_training_time_fraction", "storage_gb"],
    claims=[
        Claim(f"label-map generation is a small share of one training run (paper: {PAPER_GENERATION_HOURS:g} of "
              f"{PAPER_TRAINING_HOURS:g} GPU-hours; here below {GENERATION_SHARE_LIMIT:.0%})", kind="range",
              metric="share_of_training",
              better="label_map_generation", low=0.0, high=GENERATION_SHARE_LIMIT),
        Claim(f"LabelPooling adds little to a training step (paper: {PAPER_POOLING_FRACTION:.1%}; here below "
              f"{POOLING_SHARE_LIMIT:.0%})",
              kind="range", metric="extra_training_time_fraction", better="labelpooling", low=0.0,
              high=POOLING_SHARE_LIMIT),
        _storage_claim(),
    ],
)
