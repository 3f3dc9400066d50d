"""The configs that `train_classifier` receives for runs other than a student's own."""
from __future__ import annotations

from typing import Mapping

from repro.config import deep_update, profile_config


def annotator_recipe(cfg: Mapping) -> dict:
    """The annotator's training config (annotator.source == "train"): the profile's base recipe with the
    annotator's model and its `annotator.train` changes (epochs, resolution, batch size, crop scale), on the
    original labels. It reads neither the student's recipe nor its supervision, so every student of a profile
    (any architecture, optimiser or supervision) shares one annotator."""
    annotator = cfg["annotator"]
    if annotator["source"] != "train":
        raise ValueError(f"annotator.source is {annotator['source']!r}: only a 'train' annotator has a recipe")
    base = profile_config(cfg["profile"])
    train = deep_update(base["train"], annotator.get("train", {}))
    train["model"] = dict(annotator["model"])  # replaced whole: the student's model kwargs must not leak in
    return {"seed": cfg["seed"], "train": train, "supervision": base["supervision"]}
