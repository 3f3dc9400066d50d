"""The report of one profile: `results/<profile>/report.html` and `report.md`, read by a person.

Each experiment's table beside the paper's numbers (with the difference), its claims' verdicts (coloured: holds,
fails, not shown, no data; with interval and seed count), its figures with their captions, the commands that
computed it and their wall time; before them an overview of every experiment, the world's calibration, the
machine and package versions, and the known differences from the paper (the opening paragraph of
docs/results.md). Everything is read from the results folder and the run cache; nothing is computed here but
the current code's plan of runs, which says whether each experiment's results were computed from it.
Jinja2 renders both (it comes with the stack); the page is plain HTML/CSS whose images are the PNGs beside it.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import pandas as pd

from repro import results
from repro.claims import FAILS, HOLDS, NO_DATA, NOT_SHOWN
from repro.environment import machine_description, package_versions
from repro.experiment import CHECKED_PROFILES, PLAN_CURRENT, invocations, plan_state, shown_verdict, verdicts_for

TEMPLATES = Path(__file__).with_name("templates")
DOCS_RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results.md"
VERDICT_ORDER = (HOLDS, FAILS, NOT_SHOWN, NO_DATA)
README_MARKERS = ("<!-- verdicts: the overview of a report, written by `python -m repro report --readme README.md` -->",
                  "<!-- end of verdicts -->")


@dataclass
class Section:
    """One experiment as the report shows it."""
    name: str
    paper_ref: str
    title: str
    state: str                                   # "results", "no results yet", "not implemented yet", "out of step"
    seeds: list = field(default_factory=list)
    invocations: list = field(default_factory=list)
    keys: tuple = ()
    rows: list = field(default_factory=list)     # dicts: key columns, metric, mean, std, n, paper, diff
    verdicts: list = field(default_factory=list)  # dicts: claim, verdict, detail, checked, css
    figures: list = field(default_factory=list)  # file names beside the report
    tables: list = field(default_factory=list)   # further CSVs beside the report
    diagnostics: str = ""
    runs: int | None = None                      # cached runs it reads, and the wall time that computing them took
    runs_seconds: float | None = None
    computed_on: dict | None = None              # runs per machine kind that computed them (None: not recorded)
    plan: str = ""                               # `plan_state`: the runs behind the results against today's plan
    plan_note: str = ""

    @property
    def state_cell(self) -> str:
        return self.state if self.state != "results" or self.plan == PLAN_CURRENT else f"results, {self.plan}"

    @property
    def runs_cell(self) -> str:
        # Results written before the meta recorded their runs say so, rather than leaving a blank a reader could
        # take for zero.
        if self.runs is not None:
            return str(self.runs)
        return "not recorded" if self.state == "results" else ""

    @property
    def run_time(self) -> str:
        if self.runs_seconds is None:
            return "not recorded" if self.state == "results" else ""
        minutes = self.runs_seconds / 60
        return f"{minutes:.1f} min" if minutes < 90 else f"{minutes / 60:.1f} h"

    @property
    def machines(self) -> str:
        if not self.computed_on:
            return "not recorded"
        return "; ".join(f"{count} run{'s' * (count != 1)} on {machine}" for machine, count in self.computed_on.items())

    @property
    def counts(self) -> dict:
        return {verdict: sum(v["verdict"] == verdict for v in self.verdicts) for verdict in VERDICT_ORDER}


def _number(value, digits: int = 2) -> str:
    return "" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def experiment_section(experiment, profile: str, out_dir: Path, runs_root: Path) -> Section:
    section = Section(experiment.name, experiment.paper_ref, experiment.title, "results",
                      keys=tuple(experiment.key_columns))
    measured = results.read_measurements(out_dir, experiment.name, experiment.key_columns)
    if measured is None:
        section.state = "not implemented yet" if not experiment.implemented else "no results yet"
        return section
    if results.out_of_step(out_dir, experiment.name):
        section.state = "out of step"
        return section
    meta = results.read_meta(out_dir, experiment.name) or {}
    section.seeds = list(meta.get("seeds", []))
    section.invocations = invocations(meta)
    section.diagnostics = meta.get("report") or ""
    section.runs, section.runs_seconds = meta.get("runs"), meta.get("runs_seconds")
    section.computed_on = meta.get("computed_on")
    section.plan, section.plan_note = plan_state(experiment, profile, meta, runs_root)
    summary = results.summarise(measured, experiment.name, keys=experiment.key_columns)
    for row in summary.to_dict("records"):
        paper = row["reported"]
        section.rows.append({**{key: row[key] for key in experiment.key_columns}, "metric": row["metric"],
                             "mean": _number(row["mean"]), "std": _number(row["std"]), "n": int(row["n"]),
                             "paper": "" if pd.isna(paper) else f"{paper:g}",
                             "diff": "" if pd.isna(paper) else f"{row['mean'] - paper:+.2f}"})
    for v in verdicts_for(experiment, measured, profile):
        shown = shown_verdict(v, profile)
        section.verdicts.append({"claim": v.claim, "verdict": v.verdict, "shown": shown, "detail": v.detail,
                                 "checked": v.checked,
                                 "css": v.verdict.replace(" ", "-") if shown == v.verdict else "unchecked"})
    files = sorted(path.name for path in out_dir.glob(f"{experiment.name}*") if path.is_file())
    section.figures = [name for name in files if _belongs(name, experiment.name, ".png")]
    section.tables = [name for name in files if _belongs(name, experiment.name, ".csv")]
    return section


def _belongs(file_name: str, experiment: str, suffix: str) -> bool:
    """`table7.png`, `table7_fgsm.png` are table7's; `table70.png` would not be."""
    stem = file_name[:-len(suffix)] if file_name.endswith(suffix) else None
    return stem is not None and (stem == experiment or stem.startswith(experiment + "_"))


def world_calibration(profile: str, runs_root: Path) -> str | None:
    """The world's sizes and calibration beside ImageNet's values, from its cached run (None at paper scale or
    when the world was not built into this cache)."""
    from repro.runs import Run
    from repro.specs import Spec
    from repro.world.cli import format_stats
    from repro.world.params import world_params

    params = world_params(profile)
    if params is None:
        return None
    run = Run(Spec("world", params), runs_root)
    return format_stats(json.loads((run.dir / "metrics.json").read_text()), reused=True) if run.done else None


def known_differences(path: Path = DOCS_RESULTS) -> str | None:
    """The opening paragraph(s) of docs/results.md: the text between its title and its first section."""
    if not path.exists():
        return None
    lines = path.read_text().splitlines()
    body = []
    for line in lines[1:]:
        if line.startswith("## "):
            break
        if not line.startswith("Written by "):
            body.append(line)
    text = "\n".join(body).strip()
    return text or None


def build_sections(experiments: dict, profile: str, out_dir: Path, runs_root: Path) -> list[Section]:
    return [experiment_section(experiment, profile, out_dir, runs_root) for experiment in experiments.values()]


def render(template: str, **context) -> str:
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                                     autoescape=template.endswith(".html.j2"), trim_blocks=True,
                                     lstrip_blocks=True)
    return environment.get_template(template).render(**context)


def overview_table(sections: list[Section], profile: str, report_link: str) -> str:
    """The report's overview as a Markdown table, each experiment linked to its section of `report_link`."""
    return (f"At the `{profile}` profile ([the report]({report_link}), with every number and figure):\n\n"
            + render("overview.md.j2", sections=sections, verdict_names=VERDICT_ORDER, link_prefix=report_link))


def replace_readme_block(readme: Path, text: str) -> None:
    """Put `text` between README_MARKERS in `readme`, leaving the rest of the file as it is."""
    start, end = README_MARKERS
    content = readme.read_text()
    if content.count(start) != 1 or content.count(end) != 1 or content.index(start) > content.index(end):
        raise ValueError(f"{readme} needs one line '{start}' and, below it, one line '{end}' where the verdict "
                         f"table goes")
    head, rest = content.split(start, 1)
    readme.write_text(head + start + "\n" + text + rest[rest.index(end):])


def write_report(experiments: dict, profile: str, results_root: Path, runs_root: Path,
                 readme: Path | None = None) -> tuple[Path, Path]:
    """Write report.html and report.md into results/<profile>/ and return their paths; with `readme`, also put
    the overview table into that file's verdict block (README_MARKERS)."""
    out_dir = results.results_dir(results_root, profile)
    sections = build_sections(experiments, profile, out_dir, Path(runs_root))
    context = {"profile": profile, "sections": sections, "written": time.strftime("%Y-%m-%d %H:%M"),
               "machine": machine_description(), "packages": package_versions(),
               "calibration": world_calibration(profile, Path(runs_root)), "differences": known_differences(),
               "verdict_names": VERDICT_ORDER, "checked": profile in CHECKED_PROFILES}
    html, md = out_dir / "report.html", out_dir / "report.md"
    html.write_text(render("report.html.j2", **context))
    md.write_text(render("report.md.j2", **context))
    if readme is not None:
        link = Path(os.path.relpath(md.resolve(), Path(readme).resolve().parent)).as_posix()
        replace_readme_block(Path(readme), overview_table(sections, profile, link))
    return html, md
