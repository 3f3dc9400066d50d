"""`--plan`: every run an experiment needs, with its kind, hash, whether it is cached and its size, and nothing
computed. The runs an experiment computes come from its `plan` (their inputs, nested in their specs, follow)."""
from __future__ import annotations

import os
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from repro.progress import duration
from repro.runs import Run
from repro.specs import Spec


def with_inputs(specs: Iterable[Spec]) -> list[Spec]:
    """The specs and every spec nested in them, each once, inputs before the runs that need them."""
    ordered: dict[str, Spec] = {}

    def visit(spec: Spec) -> None:
        if spec.hash in ordered:
            return
        for dependency in spec.dependencies():
            visit(dependency)
        ordered[spec.hash] = spec

    for spec in specs:
        visit(spec)
    return list(ordered.values())


def pending_runs(specs: Iterable[Spec], runs_root: str | os.PathLike) -> dict[str, str]:
    """hash -> kind of the runs among `specs` and their inputs that the cache lacks."""
    return {spec.hash: spec.kind for spec in with_inputs(specs) if not Run(spec, runs_root).done}


def plan_total(specs: Iterable[Spec], runs_root: str | os.PathLike) -> str:
    """One line for several experiments' plans: their distinct runs (a run shared by several counted once), how
    many are cached and the compute time recorded for them (each run's last session: what a fresh cache would
    spend on them on the same machine), and the kinds of those to run."""
    ordered = with_inputs(specs)
    to_run = pending_runs(ordered, runs_root)
    pending = Counter(to_run.values())
    kinds = ", ".join(f"{kind} {count}" for kind, count in pending.most_common())
    cached = [Run(spec, runs_root) for spec in ordered if spec.hash not in to_run]
    seconds = sum(float(run.metrics.get("wall_seconds_last_session", 0.0)) for run in cached)
    recorded = f" (recorded compute time {duration(seconds)})" if cached else ""
    return (f"in all: {len(ordered)} distinct runs, {len(cached)} cached{recorded}, "
            f"{pending.total()} to run" + (f" ({kinds})" if kinds else ""))


@lru_cache(maxsize=None)
def _count_images(folder: str) -> int | None:
    if not os.path.isdir(folder):
        return None
    from repro.imagefiles import list_images

    root, split = os.path.split(folder)
    return len(list_images(root, split))


def split_images(data: dict, split: str) -> int | None:
    """How many images a split of a data spec has: from the world's parameters, or counted on disk."""
    if data["source"] == "world":
        return data["world"]["spec"].get(f"n_{split}")
    return _count_images(str(Path(data["root"]) / split))


def size(spec: Spec) -> str:
    """images x epochs for a training run, images for a label-map pass or an evaluation."""
    body = spec.body
    if spec.kind == "train" and body["data"].get("task"):  # a fine-tune: its unit is updates
        iterations = body["train"].get("iterations")
        length = f"{iterations} updates" if iterations is not None else f"{body['train']['epochs']} ep"
        return f"{body['data']['task']} fine-tune, {length} of {body['train']['batch_size']}"
    if spec.kind == "train" and body["data"].get("multilabel"):
        return f"multi-label, {split_images(body['data'], 'detection_train') or '?'} x {body['train']['epochs']} ep"
    if spec.kind in ("train", "annotator"):
        splits = body.get("splits", ["train"])
        counts = [split_images(body["data"], split) for split in splits]
        images = None if None in counts else sum(counts)
        extra = (body.get("extra_data") or {}).get("images", 0)
        total = None if images is None else images + extra
        return f"{total if total is not None else '?'} x {body['train']['epochs']} ep"
    if spec.kind == "labelmaps":
        if "source" in body:
            return "derived from stored maps"
        if body["data"].get("multilabel"):
            return f"{'oracle, ' if 'oracle' in body else ''}{split_images(body['data'], 'detection_train') or '?'} images"
        return f"{split_images(body['data'], body['split']) or '?'} images"
    if spec.kind == "eval":
        evaluator = body["evaluator"]["type"]
        if evaluator in ("topk", "real", "fgsm"):
            return f"{evaluator}: {split_images(body['data'], 'val') or '?'} val images"
        return evaluator
    if spec.kind == "detector":
        schedule, (long, short) = body["schedule"], body["image_scale"]
        return (f"{body['detector']}, {split_images(body['data'], 'detection_train') or '?'} images x "
                f"{schedule['epochs']} ep of {schedule['batch_size']} at {long}x{short}")
    if spec.kind == "evalset":
        return f"{body['set']} analogue of the world"
    return ""


def released_maps(value) -> Iterable[dict]:
    """The released label maps a spec reads as they are (inputs from outside the cache, not runs)."""
    if isinstance(value, dict):
        if "official" in value and "digest" in value:
            yield value
        for item in value.values():
            yield from released_maps(item)
    elif isinstance(value, list):
        for item in value:
            yield from released_maps(item)


def plan_lines(specs: Iterable[Spec], runs_root: str | os.PathLike) -> list[str]:
    lines = [f"{'kind':<10} {'hash':<16} {'state':<8} size"]
    ordered = with_inputs(specs)
    released = {ref["digest"]: ref for spec in ordered for ref in released_maps(spec.body)}
    for digest, ref in released.items():
        lines.append(f"{'released':<10} {digest:<16} {'input':<8} label maps in {ref['official']}")
    for spec in ordered:
        state = "cached" if Run(spec, runs_root).done else "to run"
        lines.append(f"{spec.kind:<10} {spec.hash:<16} {state:<8} {size(spec)}")
    return lines
