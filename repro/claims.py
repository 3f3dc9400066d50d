"""The paper's statements as checks over measured results, each with a verdict: holds, fails or not shown.

Comparisons between two settings use the paired per-seed difference (seed i of one against seed i of the other).
With n >= 2 paired seeds the verdict reads the 95% t-interval of the mean difference: `holds` when the whole
interval supports the claim, `fails` when the whole interval contradicts it, `not shown` otherwise. With a single
seed there is no interval; the verdict then reads the point estimate and says n=1. A seed measured on one side
only, or NaN on either, is left out of the pairing, and the detail names it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

HOLDS, FAILS, NOT_SHOWN, NO_DATA = "holds", "fails", "not shown", "no data"


@dataclass(frozen=True)
class Verdict:
    claim: str
    verdict: str
    detail: str
    checked: bool = True  # a failing checked claim makes `compare` exit non-zero


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:+.2f} (n=1, no interval)"
        return f"{self.mean:+.2f} [95% CI {self.low:+.2f}, {self.high:+.2f}] (n={self.n})"


def interval(values: np.ndarray) -> Interval:
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return Interval(mean, mean, mean, len(values))
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, len(values))


def _values(measured: pd.DataFrame, setting: str, metric: str, model: str | None,
            where: Mapping | None = None) -> pd.Series:
    rows = measured[(measured.setting == setting) & (measured.metric == metric)]
    if model is not None:
        rows = rows[rows.model == model]
    for column, value in (where or {}).items():  # further key columns, e.g. {"task": "flags"}
        rows = rows[rows[column].astype(str) == str(value)]
    per_seed = rows.groupby("seed")["value"]
    if len(rows) and per_seed.size().max() > 1:  # rows of several models or tasks: which one is the claim's?
        raise ValueError(f"a claim reads {per_seed.size().max()} rows per seed of {setting} {metric}: give it the "
                         "model (or `where`) that picks one")
    return per_seed.first()


def paired_difference(measured, metric, better, worse, model=None, worse_model=None,
                      where=None) -> tuple[np.ndarray, list]:
    """The per-seed differences better - worse over the seeds measured on both sides, and the seeds left out (on
    one side only, or NaN)."""
    a = _values(measured, better, metric, model, where)
    b = _values(measured, worse, metric, worse_model if worse_model is not None else model, where)
    seeds = a.index.union(b.index)
    paired = [seed for seed in seeds if seed in a.index and seed in b.index and np.isfinite(a[seed] - b[seed])]
    return (a[paired] - b[paired]).to_numpy(), [seed for seed in seeds if seed not in paired]


def _left_out(seeds: list) -> str:
    return f"; seed(s) {', '.join(map(str, seeds))} left out (measured on one side only, or NaN)" if seeds else ""


def _three_way(supports_low: float, supports_high: float, n: int, ok: Callable[[float], bool],
               point: float) -> str:
    if n < 2:
        return HOLDS if ok(point) else FAILS
    if ok(supports_low) and ok(supports_high):
        return HOLDS
    if not ok(supports_low) and not ok(supports_high):
        return FAILS
    return NOT_SHOWN


def interval_verdict(values, ok: Callable[[float], bool]) -> tuple[str, Interval]:
    """Holds, fails or not shown: `ok` read on both ends of the 95% interval of the mean of per-seed `values` (on
    the value itself when there is one); and that interval."""
    est = interval(np.asarray(values))
    return _three_way(est.low, est.high, est.n, ok, est.mean), est


def band_verdict(values, low: float, high: float) -> tuple[str, Interval]:
    """Whether the mean of per-seed `values` lies in [low, high]: holds if the whole 95% interval is inside, fails
    if it is wholly outside (on one side), else not shown (an interval wider than the band is not shown, where
    reading `ok` on its two ends would say fails); and that interval."""
    est = interval(np.asarray(values))
    if est.n < 2:
        return (HOLDS if low <= est.mean <= high else FAILS), est
    inside = low <= est.low and est.high <= high
    outside = est.low > high or est.high < low
    return (HOLDS if inside else FAILS if outside else NOT_SHOWN), est


@dataclass(frozen=True)
class Claim:
    """One statement of the paper. `kind`:
    - greater: setting `better` scores above `worse` on `metric` (paired over seeds);
    - within: the two settings differ by at most `margin` (absolute, in the metric's units);
    - not_worse: `better` is at most `margin` below `worse`;
    - range: the mean of `better` lies in [low, high] (for quantities such as crop statistics);
    - custom: `check(measured) -> (verdict, detail)`.
    `scale` ("paper" or "embedded"): a claim about data only one scale has (Table 8's tasks); None: both.
    """
    text: str
    kind: str = "greater"
    metric: str = "imagenet_top1"
    better: str = ""
    worse: str = ""
    model: str | None = None
    worse_model: str | None = None
    margin: float = 0.0
    low: float = -np.inf
    high: float = np.inf
    where: Mapping | None = field(default=None, compare=False)  # fixes further key columns on both sides
    check: Callable[[pd.DataFrame], tuple[str, str]] | None = field(default=None, compare=False)
    scale: str | None = None

    def evaluate(self, measured: pd.DataFrame) -> Verdict:
        if self.kind == "custom":
            verdict, detail = self.check(measured)
            return Verdict(self.text, verdict, detail, checked=verdict != NO_DATA)
        if self.kind == "range":
            values = _values(measured, self.better, self.metric, self.model, self.where)
            finite = values[np.isfinite(values)]
            left_out = _left_out([seed for seed in values.index if seed not in finite.index])
            if len(finite) == 0:
                return Verdict(self.text, NO_DATA, f"no {self.metric} for {self.better}{left_out}", checked=False)
            verdict, est = band_verdict(finite.to_numpy(), self.low, self.high)
            return Verdict(self.text, verdict,
                           f"{self.metric} = {str(est).lstrip('+')} vs [{self.low}, {self.high}]{left_out}")
        diff, unpaired = paired_difference(measured, self.metric, self.better, self.worse, self.model,
                                           self.worse_model, self.where)
        if len(diff) == 0:
            return Verdict(self.text, NO_DATA, f"no paired seeds for {self.better} vs {self.worse}"
                           f"{_left_out(unpaired)}", checked=False)
        if self.kind == "within":
            verdict, est = band_verdict(diff, -self.margin, self.margin)
        else:
            ok = {"greater": lambda d: d > 0, "not_worse": lambda d: d >= -self.margin}[self.kind]
            verdict, est = interval_verdict(diff, ok)
        return Verdict(self.text, verdict, f"{self.metric}: {self.better} − {self.worse} = {est}"
                                           f"{_left_out(unpaired)}")


def evaluate_claims(claims, measured: pd.DataFrame) -> list[Verdict]:
    return [claim.evaluate(measured) for claim in claims]


def absolute_checks(summary: pd.DataFrame, tolerance: float = 0.3,
                    tolerances: dict[str, float | None] | None = None) -> list[Verdict]:
    """Paper profile only: each reproduced mean within a per-metric tolerance of the reported number. A metric
    whose tolerance is None is shown beside the reported number, not judged: the protocol behind that number is
    not known, so a difference would say nothing about the reproduction."""
    verdicts = []
    for row in summary.dropna(subset=["reported"]).itertuples(index=False):
        tol = (tolerances or {}).get(row.metric, tolerance)
        diff = row.mean - row.reported
        if tol is None:
            verdicts.append(Verdict(f"{row.model} {row.setting} {row.metric} beside {row.reported}", NOT_SHOWN,
                                    f"reproduced {row.mean:.2f} (n={row.n}), diff {diff:+.2f}: the paper's "
                                    "protocol for this number is not known", checked=False))
            continue
        verdict = HOLDS if abs(diff) <= tol else FAILS
        verdicts.append(Verdict(f"{row.model} {row.setting} {row.metric} within ±{tol} of {row.reported}",
                                verdict, f"reproduced {row.mean:.2f} (n={row.n}), diff {diff:+.2f}"))
    return verdicts
