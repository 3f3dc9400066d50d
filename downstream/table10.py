"""Table 10: multi-label classification with LabelPooling. An ImageNet student of each architecture (the
original-label run of Tables 3 and 4, never retrained) is fine-tuned whole, with a new head, by binary cross-entropy
on random crops of the multi-label training images (`multilabel` in the profile: COCO 2017 at paper scale, the
world's detection split at embedded scale), under three supervisions of the same crops: the image's multi-hot
vector (vanilla), a machine annotator's dense label map pooled over the crop (relabel_machine) and an oracle map
made from the segmentation masks pooled the same way (relabel_oracle). Scored by mAP over classes on the val split
(`coco_map`); every class's AP per run is in `table10_per_class.csv`. docs/multilabel.md.
"""
from __future__ import annotations

import sys

import pandas as pd

from repro import results
from repro.claims import Claim
from repro.config import architecture_changes, with_changes
from repro.experiment import Collected, Context, Experiment
from repro.pipeline import multilabel_annotator_ref, resources, student_spec, train_student
from repro.runs import cached
from repro.specs import Spec, is_spec_json

SUPERVISIONS = {"vanilla": "multi_hot", "relabel_machine": "multilabel_machine", "relabel_oracle": "multilabel_oracle"}
MODELS = ("resnet50", "resnet101")  # the paper's; the profile's `multilabel.models` gives each one's resolution


def finetunes(ctx: Context) -> list[tuple[str, str, int, dict]]:
    """(model, setting, seed, config) of every fine-tune: seed i starts from the vanilla ImageNet student of seed i."""
    multilabel = ctx.config["multilabel"]
    out = []
    for arch, size in multilabel["models"].items():  # `--set multilabel.models=...` runs a subset
        recipe = architecture_changes(ctx.config, arch)
        changes = {**recipe, **{f"train.{key}": value for key, value in multilabel["train"].items()},
                   "train.crop_size": int(size), "train.eval_size": int(size), "data.multilabel": True,
                   "supervision.cutmix": False}
        for seed in ctx.seeds:
            start = student_spec(with_changes(ctx.config, {**recipe, "supervision.mode": "original", "seed": seed}),
                                 ctx.runs_root)
            for setting, mode in SUPERVISIONS.items():
                out.append((arch, setting, seed, with_changes(ctx.config, {
                    **changes, "supervision.mode": mode, "seed": seed,
                    "train.init": {"run": start.as_json(), "reset_head": "data"}})))
    return out


def plan(ctx: Context) -> list:
    return [student_spec(cfg, ctx.runs_root) for *_, cfg in finetunes(ctx)]


def collect(ctx: Context) -> Collected:
    measured, per_class = [], []
    jobs = finetunes(ctx)
    for i, (model, setting, seed, cfg) in enumerate(jobs, 1):
        print(f"== table10 fine-tune {i}/{len(jobs)}: {model} {setting} seed {seed}", file=sys.stderr, flush=True)
        metrics = train_student(cfg, ctx.runs_root)
        measured.append({"model": model, "setting": setting, "seed": seed, "metric": "coco_map",
                         "value": metrics["coco_map"]})
        per_class += [{"model": model, "setting": setting, "seed": seed, "class": k, "ap": ap}
                      for k, ap in enumerate(metrics["coco_per_class_ap"])]
    return Collected(results.measurements(measured), tables={"per_class": pd.DataFrame(per_class)})


def report(ctx: Context) -> str:
    """The machine annotator's own val mAP where the suite trained it (the paper's TResNet-XL: 88.4)."""
    ref = multilabel_annotator_ref(ctx.config)
    if not is_spec_json(ref):
        return f"machine annotator: {ctx.config['multilabel']['annotator']['model']['name']} from a checkpoint"
    metrics = cached(Spec.from_json(ref), resources(ctx.config, ctx.runs_root)).metrics
    return f"machine annotator: val mAP {metrics['coco_map']:.2f} (the ImageNet-stage annotator fine-tuned by BCE)"


EXPERIMENT = Experiment(
    name="table10",
    title="multi-label classification: multi-hot vs machine and oracle label maps pooled over each crop (mAP)",
    paper_ref="Table 10",
    collect=collect,
    plan=plan,
    report=report,
    metrics=["coco_map"],
    claims=[claim for model in MODELS for claim in (
        Claim(f"{model}: machine label maps > multi-hot", metric="coco_map", model=model, better="relabel_machine",
              worse="vanilla"),
        Claim(f"{model}: oracle label maps ≥ machine label maps", kind="not_worse", metric="coco_map", model=model,
              better="relabel_oracle", worse="relabel_machine"))],
)
