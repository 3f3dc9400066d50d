"""Evaluators as data: an experiment or profile lists evaluations as dicts (`{"type": "topk"}`,
`{"type": "real"}`, `{"type": "imagenetv2", "variant": "matched_frequency"}`), each built by `build_evaluator`.

Evaluating a trained model is its own cached run keyed by the model's run and the evaluator's spec
(`repro.pipeline.eval_spec`), so a new evaluator never invalidates a training run. An evaluator is a class with a
`type`, its options with their defaults, and `evaluate(model, data, view, resources) -> metrics`; a new one is
registered with `@register_evaluator`.
"""
from __future__ import annotations

from typing import ClassVar, Mapping

from torch import nn

from repro.data.imagenet import IMAGENET_V2, EvalSet, ImageNetData
from repro.evaluate.classification import predict_logits, set_metrics

EVALUATORS: dict[str, type["Evaluator"]] = {}


def register_evaluator(cls: type["Evaluator"]) -> type["Evaluator"]:
    EVALUATORS[cls.type] = cls
    return cls


def evaluator_spec(config: Mapping) -> dict:
    """The evaluator's spec: its type and every option, defaults filled in (so equal evaluations hash equal)."""
    kind = config.get("type")
    if kind not in EVALUATORS:
        raise ValueError(f"unknown evaluator type {kind!r}: choose one of {', '.join(EVALUATORS)}")
    cls = EVALUATORS[kind]
    options = {key: value for key, value in config.items() if key != "type"}
    unknown = set(options) - set(cls.defaults) - {"size", "crop_pct"}
    if unknown:
        raise ValueError(f"evaluator {kind!r} has no option {', '.join(sorted(unknown))}: its options are "
                         f"{', '.join(sorted(cls.defaults) + ['crop_pct', 'size'])}")
    # size / crop_pct: the eval view; None means the trained model's own (train.eval_size, eval_crop_pct)
    return {"type": kind, "size": None, "crop_pct": None, **cls.defaults, **options}


def build_evaluator(spec: Mapping) -> "Evaluator":
    spec = evaluator_spec(spec)
    options = {key: spec[key] for key in EVALUATORS[spec["type"]].defaults}
    return EVALUATORS[spec["type"]](**options)


class Evaluator:
    type: ClassVar[str]
    defaults: ClassVar[dict] = {}

    def __init__(self, **options):
        self.options = options

    def evaluate(self, model: nn.Module, data: ImageNetData, view: Mapping, resources) -> dict:
        raise NotImplementedError

    def _scored(self, model, eval_set: EvalSet, view: Mapping, resources) -> dict:
        logits = predict_logits(model, eval_set.images, size=int(view["size"]), crop_pct=float(view["crop_pct"]),
                                batch_size=resources.batch_size_eval, workers=resources.workers,
                                amp=bool(view.get("amp", False)), channels_last=bool(view.get("channels_last")),
                                interpolation=view.get("interpolation", "bilinear"))
        return set_metrics(eval_set, logits)


def named_eval_set(data: ImageNetData, name: str) -> EvalSet:
    found = next((s for s in data.eval_sets if s.name == name), None)
    if found is None:
        present = ", ".join(s.name for s in data.eval_sets) or "none"
        raise FileNotFoundError(f"evaluation set {name!r} is not in the data under {data.root} (present: {present})")
    return found


@register_evaluator
class TopK(Evaluator):
    """ImageNet val top-1 and top-5 (and per-class top-1)."""
    type = "topk"

    def evaluate(self, model, data, view, resources):
        metrics = self._scored(model, named_eval_set(data, "imagenet"), view, resources)
        return {key: value for key, value in metrics.items() if key.startswith("imagenet_")}


@register_evaluator
class Real(Evaluator):
    """ReaL top-1: the top-1 prediction in the image's ReaL label set (images with an empty set excluded)."""
    type = "real"
    defaults = {"labels": "real"}  # "shankar": the stricter multi-label set, on the same predictions

    def evaluate(self, model, data, view, resources):
        val = named_eval_set(data, "imagenet")
        key = self.options["labels"]
        if key not in val.label_sets:
            raise FileNotFoundError(f"no {key} labels for the val images under {data.root}")
        metrics = self._scored(model, EvalSet(val.name, val.images, {key: val.label_sets[key]}), view, resources)
        return {f"{key}_top1": metrics[f"{key}_top1"], f"{key}_images": metrics[f"{key}_images"]}


@register_evaluator
class ImageNetV2(Evaluator):
    """Top-1 and top-5 on one of ImageNetV2's three variants."""
    type = "imagenetv2"
    defaults = {"variant": "top_images"}

    def evaluate(self, model, data, view, resources):
        name = f"imagenetv2_{self.options['variant']}"
        if name not in IMAGENET_V2:
            variants = ", ".join(n[len("imagenetv2_"):] for n in IMAGENET_V2)
            raise ValueError(f"unknown ImageNetV2 variant {self.options['variant']!r}: one of {variants}")
        return self._scored(model, named_eval_set(data, name), view, resources)


# the robustness evaluators register themselves on import (that module builds on this one)
import repro.evaluate.robustness  # noqa: E402,F401
