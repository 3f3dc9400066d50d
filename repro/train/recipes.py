"""The configs that `train_classifier` receives for runs other than a student's own."""
from __future__ import annotations

from typing import Mapping

from repro.config import deep_update, profile_config


def annotator_recipe(cfg: Mapping) -> dict:
    """The annotator's training config (annotator.source == "train"): the student's recipe with the annotator's
    model and its `annotator.train` changes (epochs, resolution, batch size), on the original labels. Only the
    sections the trainer reads are kept, so changing a student's supervision never retrains the annotator."""
    annotator = cfg["annotator"]
    if annotator["source"] != "train":
        raise ValueError(f"annotator.source is {annotator['source']!r}: only a 'train' annotator has a recipe")
    train = deep_update(cfg["train"], {**annotator.get("train", {}), "model": annotator["model"]})
    return {"seed": cfg["seed"], "train": train, "supervision": profile_config(cfg["profile"])["supervision"]}
