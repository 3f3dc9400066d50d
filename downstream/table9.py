"""Table 9: object detection and instance segmentation. Faster R-CNN and Mask R-CNN R-50-FPN, from the configs
shipped inside MMDetection, are trained and scored by MMDetection itself (its Runner, its CocoMetric) with the
backbone initialised from Table 3's vanilla and ReLabel ResNet-50s (the same runs, never retrained): COCO 2017 at
paper scale, the world's detection split at embedded scale (`detection` in the profile). Bbox AP of both, mask AP
of Mask R-CNN; AP50 and AP75 beside them in the seeds CSV. Needs the detection extra (`make detection`).
docs/detection.md.
"""
from __future__ import annotations

import sys

from repro import results
from repro.claims import Claim
from repro.config import with_changes
from repro.detection import DETECTORS, detector_spec
from repro.downstream.table8 import BACKBONES
from repro.experiment import Context, Experiment
from repro.pipeline import resources, student_spec
from repro.runs import cached

HEADLINE = ["faster_rcnn_bbox_ap", "mask_rcnn_bbox_ap", "mask_rcnn_mask_ap"]  # the paper's columns


def detectors(ctx: Context) -> list[tuple[str, str, int, object]]:
    """(detector, backbone, seed, spec) of every detector run: seed i starts from the backbone of seed i."""
    out = []
    for detector in ctx.config["detection"]["detectors"]:  # `--set detection.detectors=[...]` runs a subset
        for backbone, changes in BACKBONES.items():
            for seed in ctx.seeds:
                cfg = with_changes(ctx.config, {**changes, "seed": seed})
                start = student_spec(cfg, ctx.runs_root)
                out.append((detector, backbone, seed, detector_spec(cfg, detector, start.as_json())))
    return out


def plan(ctx: Context) -> list:
    return [spec for *_, spec in detectors(ctx)]


def collect(ctx: Context):
    measured = []
    jobs = detectors(ctx)
    for i, (detector, backbone, seed, spec) in enumerate(jobs, 1):
        print(f"== table9 detector {i}/{len(jobs)}: {detector} from {backbone} seed {seed}", file=sys.stderr,
              flush=True)
        metrics = cached(spec, resources(ctx.config, ctx.runs_root)).metrics
        if metrics.get("empty_detections"):
            print(f"warning: table9: {detector} from {backbone} seed {seed} detected nothing on the val split: its "
                  f"AP is 0 (run {spec.hash})", file=sys.stderr, flush=True)
        prefix = DETECTORS[detector][1]
        measured += [{"model": "resnet50", "setting": backbone, "seed": seed, "metric": metric, "value": value}
                     for metric, value in metrics.items() if metric.startswith(f"{prefix}_")]
    return results.measurements(measured)


EXPERIMENT = Experiment(
    name="table9",
    title="Faster/Mask R-CNN (MMDetection) from the vanilla and ReLabel ResNet-50s: bbox and mask AP",
    paper_ref="Table 9",
    collect=collect,
    plan=plan,
    metrics=HEADLINE,
    claims=[Claim(f"relabel ≥ vanilla on {metric}", kind="not_worse", metric=metric, model="resnet50",
                  better="relabel", worse="vanilla") for metric in HEADLINE],
)
