"""Table 5: ReLabel with further training tricks, towards the state of the art.

ResNet-50 and ResNet-101: vanilla, + ReLabel, + ReLabel + CutMix (the pooled targets of the two crops are mixed by
the pasted area; the CutMix recipe switches to AdamP, lr 2e-3, wd 1e-2, and turns CutMix off for the last epochs).
The paper's "+ extra data" row (ReLabel on a top-1-balanced subsample of ImageNet-21k) is not among these runs.
"""
from repro.claims import Claim
from repro.experiment import TrainingExperiment, annotator_report

CUTMIX = {"supervision.mode": "relabel", "supervision.cutmix": True,
          "train.opt": "adamp", "train.lr": 2e-3, "train.weight_decay": 1e-2}
SETTINGS = {
    "vanilla": {"supervision.mode": "original"},
    "relabel": {"supervision.mode": "relabel"},
    "relabel_cutmix": CUTMIX,
}
ARCHITECTURES = ("resnet50", "resnet101")


def runs(config):
    return {(arch, setting): {**changes, "train.model": config["models"][arch]}
            for arch in ARCHITECTURES for setting, changes in SETTINGS.items()}


EXPERIMENT = TrainingExperiment(
    name="table5",
    title="ResNet-50/101: vanilla, + ReLabel, + ReLabel + CutMix",
    paper_ref="Table 5",
    runs=runs,
    report=annotator_report,
    metrics=["imagenet_top1"],
    claims=[claim for arch in ARCHITECTURES for claim in (
        Claim(f"{arch}: + ReLabel > vanilla", better="relabel", worse="vanilla", model=arch),
        Claim(f"{arch}: + ReLabel + CutMix > + ReLabel", better="relabel_cutmix", worse="relabel", model=arch),
    )],
)
