"""`python -m repro world`: build (or reuse) the generated world of a profile and print its calibration."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from repro.config import DEFAULT_PROFILE, PROFILE_NAMES, ConfigError, parse_overrides, with_changes
from repro.runs import Run
from repro.specs import Spec
from repro.world.params import world_params


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "world", help="build (or reuse) the generated image world and print its calibration statistics",
        description="Build the embedded world of a profile into the run cache (reused when it exists) and print "
                    "its calibration against ImageNet and its path.")
    parser.add_argument("--profile", choices=PROFILE_NAMES, default=DEFAULT_PROFILE,
                        help=f"world sizes (default {DEFAULT_PROFILE}); paper has no world")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change a world parameter, e.g. --set p_multi=0.2 or --set v2_variants.top-images."
                             "clutter=1 (repeatable; docs/world.md lists them)")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="run cache directory (default runs/)")
    parser.set_defaults(func=run_world_command)


def run_world_command(args, experiments=None) -> int:
    """The `world` command; `experiments` is what repro's main command line hands every command (unused here)."""
    from repro.steps import ensure_world  # imports torch: only when the command runs
    from repro.world.build import check_params

    params = world_params(args.profile)
    if params is None:
        print(f"error: the {args.profile} profile has no generated world: it reads ImageNet from data.root",
              file=sys.stderr)
        return 2
    try:
        params = with_changes(params, parse_overrides(args.overrides))
        check_params(params)
    except (ConfigError, KeyError) as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    reused = Run(Spec("world", params), args.runs).done
    root = ensure_world(params, args.runs)
    metrics = json.loads((root / "metrics.json").read_text())
    print(format_stats(metrics, reused))
    print(f"\nworld: {root}")
    return 0


def _pct(value: float) -> str:
    return f"{100 * value:5.1f}%"


def format_stats(stats: dict, reused: bool = False) -> str:
    """The world's sizes, its calibration beside ImageNet's values with a verdict, and the v2 variants."""
    from repro.world.stats import DESCRIPTIONS

    counts, params = stats["counts"], stats["params"]

    def total(prefix: str) -> int:
        return sum(n for name, n in counts.items() if name.startswith(prefix))

    lines = [f"{len(stats['classes'])} classes, {params['image_size']} px, seed {params['seed']}",
             f"images: train {counts['train']}, extra {counts['extra']}, val {counts['val']}, "
             f"v2 {total('v2/')} ({len(stats['v2'])} variants), rendition {counts.get('rendition', 0)}, "
             f"downstream {total('downstream/')} ({len(stats['downstream'])} tasks), detection {total('detection/')}"]
    if "build_seconds" in stats:
        seconds = f"{stats['build_seconds']:.1f} s"
        lines.append(f"reused (built in {seconds})" if reused else f"built in {seconds}")
    lines += ["", f"{'calibration on val (' + str(params['crops_per_image']) + ' crops per image)':44} "
                  f"{'world':>7} {'ImageNet':>9} {'band':>8}  verdict"]
    for key in DESCRIPTIONS:  # a fixed order: metrics.json stores keys sorted
        row = stats["calibration"][key]
        verdict = "in band" if row["in_band"] else "OUT OF BAND"
        lines.append(f"{DESCRIPTIONS[key]:44} {_pct(row['world']):>7} {_pct(row['imagenet']):>9} "
                     f"{'±' + format(100 * row['band'], '.1f') + 'pp':>8}  {verdict}")
    lines.append(f"{'val images with >= 2 classes (shankar.json)':44} {_pct(stats['val']['shankar_multilabel']):>7}")
    lines += ["", f"{'v2 variant':20} {'IoU = 0':>8} {'IoU > 0.5':>10} {'>= 2 classes':>13} {'primary area':>13}"]
    for name, row in stats["v2"].items():
        lines.append(f"{name:20} {_pct(row['iou_zero']):>8} {_pct(row['iou_gt_0.5']):>10} "
                     f"{_pct(row['multilabel']):>13} {_pct(row['primary_area_share']):>13}")
    rendition = stats["rendition"]
    lines.append("")
    lines.append(f"rendition set: {rendition['images']} images (Noto Color Emoji)" if rendition["written"]
                 else f"rendition set: not written ({rendition['reason']})")
    return "\n".join(lines)
