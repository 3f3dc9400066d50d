"""`python -m repro`: run a paper table or figure, all of them, or compare results with the paper."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from repro.cluster import launch
from repro.preemption import PREEMPTED_STATUS, Preempted
from repro.config import (DEFAULT_PROFILE, PROFILE_NAMES, ConfigError, check_change, parse_overrides, profile_config,
                          with_changes)
from repro.experiment import (Context, InputsProblem, NotImplementedExperiment, TrainingExperiment, check_experiments,
                              compare, discover, experiment_plan, planned_specs, run_experiment)


def _add_context_options(parser: argparse.ArgumentParser) -> None:
    """What every command that plans runs reads: the profile, seeds, config changes, the run cache and results."""
    parser.add_argument("--profile", choices=PROFILE_NAMES, default=DEFAULT_PROFILE,
                        help=f"sizes and paths: smoke (seconds, for tests), proxy (embedded world, the default), "
                             f"paper (ImageNet). Default {DEFAULT_PROFILE}")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per setting (default 1); where N > 1 at the proxy profile, Tables 3 "
                             "and A1 run 5, since their ImageNetV2 intervals straddle zero at 3")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change the base config, e.g. --set train.epochs=4 (repeatable); the keys are those of "
                             "repro/config.py, the paper-scale ones listed in docs/paper-scale.md")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="run cache directory (default runs/)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="results directory (default results/)")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    _add_context_options(parser)
    parser.add_argument("--plan", action="store_true",
                        help="list every run the experiment needs (kind, hash, cached or not, size) and stop")
    cluster = parser.add_argument_group("cluster jobs (submitit; pip install -e '.[cluster]')")
    cluster.add_argument("--submit", choices=("slurm", "local"), default=None,
                         help="compute each run the cache lacks as its own job (Slurm, or processes on this machine), "
                              "wait for them, then tabulate here")
    cluster.add_argument("--submit-no-wait", action="store_true",
                         help="with --submit: print the job ids and the command that tabulates, and stop")
    cluster.add_argument("--slurm-partition", dest="slurm_partition", metavar="P", help="Slurm partition of every job")
    cluster.add_argument("--slurm-account", dest="slurm_account", metavar="A", help="Slurm account charged")
    cluster.add_argument("--slurm-gpus-per-node", dest="slurm_gpus_per_node", type=int, metavar="G",
                         help="GPUs (one task each) per node of a training job; other jobs take one (default 1)")
    cluster.add_argument("--slurm-nodes", dest="slurm_nodes", type=int, metavar="N",
                         help="nodes of a training job (default 1)")
    cluster.add_argument("--slurm-time", dest="slurm_time_min", type=int, metavar="MIN",
                         help="time limit of each job in minutes (default 1440)")
    cluster.add_argument("--slurm-cpus-per-task", dest="slurm_cpus_per_task", type=int, metavar="C",
                         help="CPU cores per task (the loader's workers; default: submitit's)")
    cluster.add_argument("--slurm-mem-gb", dest="slurm_mem_gb", type=float, metavar="M",
                         help="memory per node in GB (default: the partition's)")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def _settings(text: str) -> tuple[str, ...]:
    return tuple(word.strip() for word in text.split(",") if word.strip())


def build_parser(experiments) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m repro",
        description="Reproduce the tables and figures of ReLabel (Yun et al., CVPR 2021). "
                    "Each experiment writes results/<profile>/<name>.csv and .png.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, experiment in experiments.items():
        p = sub.add_parser(name, help=experiment.help, description=experiment.help)
        _add_run_options(p)
        if isinstance(experiment, TrainingExperiment):
            p.add_argument("--rows", type=_settings, default=(), metavar="S1,S2",
                           help="compute only these settings (the `setting` column of its CSV, every model's), e.g. "
                                "table6 --rows relabel_fp32_top5,relabel_compact_top5; the CSV keeps the other rows "
                                "as results/ held them")
        p.set_defaults(func=_run_one, experiment=name)
    p = sub.add_parser("all", help="run every implemented experiment in order")
    _add_run_options(p)
    p.set_defaults(func=_run_all)
    p = sub.add_parser("check", help="check the data, label maps and annotators an experiment would read, in "
                                     "seconds, computing nothing (exit 2 on a problem)")
    p.add_argument("experiments", nargs="*", default=["table3"], metavar="EXPERIMENT",
                   help="whose runs to check (default table3; all: every experiment, as `all` and `make paper` check "
                        "them before computing)")
    _add_context_options(p)
    p.add_argument("--processes", type=_positive, default=None, metavar="N",
                   help="check that every global batch splits over N training processes (default: torchrun's "
                        "WORLD_SIZE, else 1; make paper passes NPROC)")
    p.set_defaults(func=_check)
    p = sub.add_parser("compare", help="reproduced vs reported numbers and every claim's verdict "
                                       "(exit 1 if a checked claim fails)")
    p.add_argument("--profile", choices=PROFILE_NAMES, default=DEFAULT_PROFILE,
                   help=f"whose results: results/<profile>/ (default {DEFAULT_PROFILE}: after a paper run, give "
                        "--profile paper)")
    p.add_argument("--results", type=Path, default=Path("results"), help="results directory (default results/)")
    p.add_argument("--runs", type=Path, default=Path("runs"),
                   help="run cache whose runs a train.init change names (default runs/)")
    p.add_argument("--markdown", type=Path, default=None, help="also write the report as Markdown to this file")
    p.set_defaults(func=_compare)
    p = sub.add_parser("report", help="write results/<profile>/report.html and report.md: every experiment's "
                                      "table beside the paper's, its verdicts and figures, the machine")
    p.add_argument("--profile", choices=PROFILE_NAMES, default=DEFAULT_PROFILE,
                   help=f"whose results: results/<profile>/ (default {DEFAULT_PROFILE}: after a paper run, give "
                        "--profile paper)")
    p.add_argument("--results", type=Path, default=Path("results"), help="results directory (default results/)")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="run cache holding the world, and the runs a train.init change names "
                                                                "(default runs/)")
    p.add_argument("--readme", type=Path, default=None, metavar="README.md",
                   help="also write the overview (each experiment's verdict counts) into this file, between its "
                        "two verdict-block comment lines")
    p.set_defaults(func=_report)
    from repro.labelmaps import cli as labelmaps_cli
    from repro.world import cli as world_cli

    world_cli.register(sub)
    labelmaps_cli.register(sub)
    return parser


def make_context(args) -> Context:
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    overrides = parse_overrides(args.overrides)
    base = profile_config(args.profile)
    config = with_changes(base, overrides)  # an unknown key is a ConfigError naming it
    for dotted, value in overrides.items():
        check_change(base, dotted, value)
    return Context(profile=args.profile, config=config, seeds=list(range(args.seeds)), runs_root=args.runs,
                   results_root=args.results, overrides=overrides, rows=getattr(args, "rows", ()))


def _run_one(args, experiments) -> int:
    ctx = make_context(args)
    if (status := launch(args, [experiments[args.experiment]], ctx)) is not None:
        return status
    if args.plan:
        print(experiment_plan(experiments[args.experiment], ctx))
        return 0
    track_runs([experiments[args.experiment]], ctx)
    try:
        run_experiment(experiments[args.experiment], ctx)
    except NotImplementedExperiment as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def experiment_specs(experiments, ctx) -> list:
    """The specs of the runs these experiments compute (their inputs not listed)."""
    return [spec for experiment in experiments for spec in planned_specs(experiment, ctx)]


def track_runs(experiments, ctx, specs: list | None = None) -> dict[str, str]:
    """Progress lines over the runs these experiments need that the cache lacks (each once; their planned
    `specs`, unless given); those runs."""
    from repro import progress
    from repro.plan import pending_runs

    pending = pending_runs(experiment_specs(experiments, ctx) if specs is None else specs, ctx.runs_root)
    progress.track(pending)
    return pending


def _run_all(args, experiments) -> int:
    ctx = make_context(args)
    if (status := launch(args, list(experiments.values()), ctx)) is not None:
        return status
    if args.plan:
        from repro.plan import plan_total

        plans = {experiment.name: planned_specs(experiment, ctx) for experiment in experiments.values()}
        print("\n\n".join(experiment_plan(experiment, ctx, plans[experiment.name])
                           for experiment in experiments.values()))
        print("\n" + plan_total([spec for specs in plans.values() for spec in specs], ctx.runs_root))
        return 0
    skipped = [name for name, experiment in experiments.items() if not experiment.implemented]
    runnable = [experiment for experiment in experiments.values() if experiment.implemented]
    # every key to set and every missing input of all of them stops here, not after days of earlier tables
    pending = track_runs(runnable, ctx, check_experiments(runnable, ctx))
    print(f"{len(pending)} runs to compute for {len(runnable)} experiments (python -m repro all --plan lists them)",
          file=sys.stderr, flush=True)
    for experiment in runnable:
        run_experiment(experiment, ctx, inputs_checked=True)
    if skipped:
        print(f"not implemented yet, skipped: {', '.join(skipped)}", file=sys.stderr)
    return 0


def _check(args, experiments) -> int:
    ctx = make_context(args)
    names = list(experiments) if args.experiments == ["all"] else args.experiments
    unknown = [name for name in names if name not in experiments]
    if unknown:
        print(f"error: unknown experiment {unknown[0]}: choose from all, {', '.join(experiments)}", file=sys.stderr)
        return 2
    check_experiments([experiments[name] for name in names], ctx, verbose=True, processes=args.processes)
    print("inputs ok")
    return 0


def _compare(args, experiments) -> int:
    return compare(experiments, args.profile, args.results, args.runs, args.markdown)


def _report(args, experiments) -> int:
    from repro.report import write_report

    html, md = write_report(experiments, args.profile, args.results, args.runs, args.readme)
    print(f"wrote {html} and {md}" + (f", and the verdict table in {args.readme}" if args.readme else ""))
    return 0


# what a wrong input raises, with a message that names it: one line on stderr and exit status 2, unless REPRO_DEBUG
USER_ERRORS = (ConfigError, FileNotFoundError, NotADirectoryError, ValueError)
OUT_OF_MEMORY = ("a GPU ran out of memory: for an evaluation or a label-map pass lower resources.batch_size_eval "
                 "(--set; no result changes); for training use more GPUs, or raise train.accum_steps (the global "
                 "batch stays, but BatchNorm sees smaller micro-batches: another run)")


def main(argv: list[str] | None = None) -> int:
    experiments = discover()
    parser = build_parser(experiments)
    args = parser.parse_args(argv)
    try:
        return args.func(args, experiments) or 0
    except InputsProblem as problem:  # the pre-flight check's problems, one line each
        print(problem, file=sys.stderr)
        return 2
    except Preempted as stopped:
        print(f"stopped: {stopped}", file=sys.stderr)
        return PREEMPTED_STATUS
    except USER_ERRORS as error:
        if os.environ.get("REPRO_DEBUG"):
            raise
        print(f"error: {error} (REPRO_DEBUG=1 shows where)", file=sys.stderr)
        return 2
    except torch.cuda.OutOfMemoryError:  # the run that ran out stays unfinished
        if os.environ.get("REPRO_DEBUG"):
            raise
        print(f"error: {OUT_OF_MEMORY} (REPRO_DEBUG=1 shows where)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
