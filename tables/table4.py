"""Table 4: ReLabel across architectures — ResNet-18/50/101, EfficientNet-B0..B3, ReXNet-1.0.

Each architecture is trained with the original labels (vanilla) and with ReLabel under the same recipe: the base
recipe, or its family's own where the profile's `recipes` gives one (the paper's EfficientNets and ReXNet were
trained under their own). At the embedded scale the architectures are narrower members of the same timm families
(`models` in the profile).
"""
from repro.claims import Claim
from repro.config import architecture_changes
from repro.experiment import TrainingExperiment, annotator_report

ARCHITECTURES = ("resnet18", "resnet50", "resnet101", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2",
                 "efficientnet_b3", "rexnet_100")


def runs(config):
    settings = {}
    for arch in ARCHITECTURES:
        recipe = architecture_changes(config, arch)
        settings[(arch, "vanilla")] = {**recipe, "supervision.mode": "original"}
        settings[(arch, "relabel")] = {**recipe, "supervision.mode": "relabel"}
    return settings


EXPERIMENT = TrainingExperiment(
    name="table4",
    title="vanilla vs ReLabel on ResNet-18/50/101, EfficientNet-B0..B3 and ReXNet-1.0",
    paper_ref="Table 4",
    runs=runs,
    report=annotator_report,
    metrics=["imagenet_top1"],
    claims=[Claim(f"{arch}: ReLabel > vanilla", better="relabel", worse="vanilla", model=arch)
            for arch in ARCHITECTURES],
)
