"""Results: per-seed measurements, their summary over seeds, the paper's reported numbers, CSV and PNG writing.

Every experiment produces a long table of measurements, one row per (key columns, seed, metric); the key columns
are the experiment's own (model and setting unless it declares others, e.g. backbone, task, lr). It is written as
`<exp>_seeds.csv`; its summary (mean, std, n over seeds, with the paper's number beside it) as `<exp>.csv`; further
tables the experiment returns as `<exp>_<name>.csv`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from repro.plotting import plt, wrapped_title

KEY = ("model", "setting")


def reported_numbers() -> pd.DataFrame:
    """The numbers the paper reports (transcribed with their source: table, section or the talk slides)."""
    with resources.files("repro").joinpath("reported.csv").open() as f:
        return pd.read_csv(f)


def reported_for(experiment: str) -> pd.DataFrame:
    table = reported_numbers()
    return table[table.experiment == experiment].reset_index(drop=True)


def measurements(rows: list[dict], keys=KEY) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[*keys, "seed", "metric", "value"])
    frame["value"] = frame["value"].astype(float)
    return frame


def summarise(measured: pd.DataFrame, experiment: str | None = None, keys=KEY) -> pd.DataFrame:
    """Mean, std and n over seeds per (key columns, metric), with the reported number where the paper has one
    (matched on the key columns that reported.csv has)."""
    keys = list(keys)
    grouped = measured.groupby(keys + ["metric"], sort=False)["value"]
    summary = grouped.agg(mean="mean", std="std", n="count").reset_index()
    summary["std"] = summary["std"].fillna(0.0)
    if experiment is not None:
        reported = reported_for(experiment)
        shared = [key for key in keys if key in reported.columns] + ["metric"]
        reported = reported[shared + ["value"]].rename(columns={"value": "reported"})
        summary = summary.merge(reported, on=shared, how="left")
    else:
        summary["reported"] = np.nan
    return summary


def wide(summary: pd.DataFrame, keys=KEY) -> pd.DataFrame:
    """One row per key, columns <metric>_mean / _std / _n / _reported, in first-seen order."""
    keys = list(keys)
    rows = summary[keys].drop_duplicates().reset_index(drop=True)
    out = rows.copy()
    for metric in summary["metric"].drop_duplicates():
        part = summary[summary.metric == metric].set_index(keys)
        for stat in ("mean", "std", "n", "reported"):
            out[f"{metric}_{stat}"] = [part[stat].get(tuple(key), np.nan) for key in rows.itertuples(index=False)]
    return out


def results_dir(results_root: str | Path, profile: str) -> Path:
    path = Path(results_root) / profile
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_results(measured: pd.DataFrame, summary: pd.DataFrame, out_dir: Path, experiment: str,
                  tables: dict[str, pd.DataFrame] | None = None, keys=KEY) -> dict:
    """Write <exp>_seeds.csv (every measurement), <exp>.csv (one row per key) and <exp>_<name>.csv for each
    further table; return the paths."""
    paths = {"seeds": out_dir / f"{experiment}_seeds.csv", "table": out_dir / f"{experiment}.csv"}
    measured.to_csv(paths["seeds"], index=False)
    wide(summary, keys).to_csv(paths["table"], index=False, float_format="%.4g")
    for name, table in (tables or {}).items():
        paths[name] = out_dir / f"{experiment}_{name}.csv"
        table.to_csv(paths[name], index=False, float_format="%.6g")
    return paths


def read_measurements(out_dir: Path, experiment: str, keys=KEY) -> pd.DataFrame | None:
    path = Path(out_dir) / f"{experiment}_seeds.csv"
    if not path.exists():
        return None
    return pd.read_csv(path, dtype={**{key: str for key in keys}, "metric": str})


STAGING = ".staging-"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@contextmanager
def staged_results(out_dir: Path, experiment: str) -> Iterator[Path]:
    """A hidden folder inside out_dir in which the caller writes one experiment's files. On success they are
    moved into out_dir, a rename each and the meta file (written last, with every file's sha256) moved last; on
    an error or a kill the files already in out_dir stay as they were, in step with their meta."""
    out_dir = Path(out_dir)
    # .staging-<experiment>-<host>-<pid>-<random>: only this host's dead processes' folders are removed (a shared
    # results folder may be written from other nodes)
    mine = f"{STAGING}{experiment}-{socket.gethostname()}-"
    for stale in out_dir.glob(f"{mine}*"):
        if not Path(f"/proc/{stale.name[len(mine):].split('-')[0]}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=f"{mine}{os.getpid()}-", dir=out_dir))
    try:
        yield stage
        meta = stage / f"{experiment}_meta.json"
        for path in sorted(stage.iterdir(), key=lambda path: path == meta):
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_meta(stage: Path, experiment: str, meta: dict) -> None:
    """<exp>_meta.json, with the sha256 of each file already written in `stage` (`out_of_step` checks them)."""
    files = {path.name: file_sha256(path) for path in sorted(Path(stage).iterdir()) if path.is_file()}
    (Path(stage) / f"{experiment}_meta.json").write_text(json.dumps({**meta, "files": files}, indent=2))


def out_of_step(out_dir: Path, experiment: str) -> list[str]:
    """Files of `experiment` in out_dir that differ from what its meta recorded (a kill between the renames of
    `staged_results`, or an edit by hand)."""
    meta = read_meta(out_dir, experiment) or {}
    return [name for name, digest in meta.get("files", {}).items()
            if not (Path(out_dir) / name).exists() or file_sha256(Path(out_dir) / name) != digest]


def read_meta(out_dir: Path, experiment: str) -> dict | None:
    path = Path(out_dir) / f"{experiment}_meta.json"
    return json.loads(path.read_text()) if path.exists() else None


def format_summary(summary: pd.DataFrame, keys=KEY) -> str:
    """A plain-text table: one line per key and metric, reproduced (mean ± std, n) beside reported."""
    widths = {"model": 18, "setting": 28}
    head = " ".join(f"{key:<{widths.get(key, 16)}}" for key in keys)
    lines = [f"{head} {'metric':<36} {'reproduced':>18} {'reported':>9} {'diff':>7}"]
    for row in summary.itertuples(index=False):
        reproduced = f"{row.mean:.2f} ± {row.std:.2f} (n={row.n})"
        reported = "" if pd.isna(row.reported) else f"{row.reported:.2f}"
        diff = "" if pd.isna(row.reported) else f"{row.mean - row.reported:+.2f}"
        key = " ".join(f"{str(getattr(row, k)):<{widths.get(k, 16)}}" for k in keys)
        lines.append(f"{key} {row.metric:<36} {reproduced:>18} {reported:>9} {diff:>7}")
    return "\n".join(lines)


def bar_plot(summary: pd.DataFrame, path: Path, title: str, metrics: list[str] | None = None, keys=KEY) -> Path:
    """Grouped bars per metric: reproduced mean with std error bars, the paper's number as a marker beside it.

    Proxy-scale and paper-scale numbers live on different scales, so each metric gets its own panel and the
    reported numbers sit on a second axis.
    """
    present = list(summary["metric"].drop_duplicates())
    metrics = [m for m in (metrics or present) if m in present]  # a metric no eval set produced gets no panel
    bars = max((summary.metric == metric).sum() for metric in metrics)
    width = max(4.5, max(3.2, 0.45 * bars) * len(metrics)) + 1  # wide enough for every bar's label
    fig, axes = plt.subplots(1, len(metrics), figsize=(width, 4.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        part = summary[summary.metric == metric].reset_index(drop=True)
        # the key columns that tell the bars apart (the last one always)
        varying = [key for key in keys[:-1] if part[key].nunique() > 1] + [keys[-1]]
        labels = [" ".join(str(value) for value in row) for row in part[varying].itertuples(index=False)]
        x = np.arange(len(part))
        ax.bar(x, part["mean"], yerr=part["std"], color="#4C72B0", alpha=0.85, capsize=3, label="reproduced")
        low = (part["mean"] - part["std"]).min()
        high = (part["mean"] + part["std"]).max()
        pad = max(0.5, 0.15 * (high - low))
        ax.set_ylim(low - pad, high + pad)
        ax.set_xticks(x, labels, rotation=40, ha="right", rotation_mode="anchor", fontsize=8)
        ax.set_title(metric, fontsize=10)
        ax.set_ylabel("reproduced (%)")
        if part["reported"].notna().any():
            twin = ax.twinx()
            twin.plot(x, part["reported"], "D", color="#C44E52", label="paper")
            reported = part["reported"].dropna()
            rpad = max(0.5, 0.15 * (reported.max() - reported.min()))
            twin.set_ylim(reported.min() - rpad, reported.max() + rpad)
            twin.set_ylabel("paper (%)", color="#C44E52")
            twin.tick_params(axis="y", colors="#C44E52")
    handles = [plt.Rectangle((0, 0), 1, 1, color="#4C72B0"),
               plt.Line2D([], [], marker="D", color="#C44E52", linestyle="none")]
    fig.legend(handles, ["reproduced (mean ± std over seeds)", "paper"], loc="lower center", ncol=2, fontsize=8)
    fig.suptitle(wrapped_title(title, width=int(11 * width)), fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
