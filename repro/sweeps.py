"""Annotators of several strengths (Figure 4) and KD teachers of several sizes (Figure 6), as changes to a
config. Each variant is an annotator config, so it is trained (embedded scale) or loaded (paper scale) by the
pipeline's cached runs: `annotator_run`, `labelmaps_dir`, `kd_changes`.

At paper scale they are the paper's pretrained EfficientNets (noisy-student weights in timm, RandAugment's for B8)
and Instagram-pretrained ResNeXt-101 32x32d, each at its own resolution. At the embedded scale they are CPU-sized
ResNets of timm's families, made weaker than the profile's annotator by fewer epochs and fewer channels, and larger
by depth; the strongest annotator of the sweep is the profile's own, so Figure 4 and Figure 6 share their runs with
every ReLabel table.
"""
from __future__ import annotations

from typing import Mapping

from repro.config import GENERATED_MAPS

# the paper's annotators (Figure 4), weakest first by their weights' published top-1, and KD teachers (Figure 6):
# name in the paper -> timm's weights. timm has no noisy-student B8 (its RandAugment B8 stands in) and no
# ResNeXt-101 32x48d WSL (the 32x32d, the paper's other one, is there)
PAPER_ANNOTATORS = {
    "efficientnet_b1": "tf_efficientnet_b1.ns_jft_in1k",
    "efficientnet_b3": "tf_efficientnet_b3.ns_jft_in1k",
    "resnext101_32x32d_wsl": "resnext101_32x32d.fb_wsl_ig1b_ft_in1k",
    "efficientnet_b8": "tf_efficientnet_b8.ra_in1k",
    "efficientnet_b5": "tf_efficientnet_b5.ns_jft_in1k",
    "efficientnet_b7": "tf_efficientnet_b7.ns_jft_in1k",
    "efficientnet_l2": "tf_efficientnet_l2.ns_jft_in1k_475",
}
PAPER_TEACHERS = ("efficientnet_b1", "efficientnet_b3", "efficientnet_b5", "efficientnet_b7")


def model_label(model: Mapping) -> str:
    """A short name for an embedded model spec: its timm name and stem width, e.g. resnet26w32."""
    kwargs = model.get("kwargs") or {}
    width = kwargs.get("stem_width") or (kwargs.get("channels") or [None])[0]
    return f"{model['name']}w{width}" if width else model["name"]


def _paper_variant(timm_name: str) -> dict:
    import timm

    size = int(timm.models.get_pretrained_cfg(timm_name).input_size[-1])
    # each annotator labels the images itself: the released maps are one annotator's
    return {"annotator.source": "timm", "annotator.pretrained": True, "annotator.checkpoint": None,
            "annotator.model": {"name": timm_name, "kwargs": {}}, "labelmap.input_size": size,
            **GENERATED_MAPS}


def _embedded_variant(model: Mapping, epochs: int) -> tuple[str, dict]:
    return (f"{model_label(model)}_{epochs}ep",
            {"annotator.model": dict(model), "annotator.train.epochs": int(epochs)})


def annotator_sweep(cfg: Mapping) -> dict[str, dict]:
    """Figure 4's annotators, weakest first: name -> config changes."""
    if cfg["annotator"]["source"] != "train":
        return {name: _paper_variant(timm_name) for name, timm_name in PAPER_ANNOTATORS.items()}
    annotator = cfg["annotator"]
    epochs = int(annotator["train"]["epochs"])
    small = cfg["models"]["resnet18"]
    # the profile's annotator stopped after 1 and epochs - 1 epochs, a narrower one trained as long, and the
    # profile's own; equal names are equal configs (at smoke one epoch is all there is), kept once by the dict
    return dict(_embedded_variant(model, e) for model, e in (
        (annotator["model"], 1), (annotator["model"], max(1, epochs - 1)), (small, epochs),
        (annotator["model"], epochs)))


def kd_teachers(cfg: Mapping) -> dict[str, dict]:
    """Figure 6's KD teachers, smallest first: name -> config changes of the annotator they are."""
    if cfg["annotator"]["source"] != "train":
        return {name: _paper_variant(PAPER_ANNOTATORS[name]) for name in PAPER_TEACHERS}
    annotator = cfg["annotator"]
    epochs = int(annotator["train"]["epochs"])
    deeper = {"name": "resnet50", "kwargs": annotator["model"]["kwargs"]}
    teachers = {}
    for model in (cfg["models"]["resnet18"], annotator["model"], deeper):
        _, changes = _embedded_variant(model, epochs)
        teachers[model_label(model)] = changes
    return teachers
