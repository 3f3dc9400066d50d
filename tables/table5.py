"""Table 5: ReLabel with further training tricks, towards the state of the art.

ResNet-50 and ResNet-101: vanilla, + ReLabel, + ReLabel + CutMix (the pooled targets of the two crops are mixed by
the pasted area; the CutMix recipe switches to AdamP, lr 2e-3, wd 1e-2, and turns CutMix off for the last epochs),
and for ResNet-50 + extra data: the annotator relabels a further pool of images (ImageNet-21k in the paper, the
world's extra/ split here) and a subsample balanced over its top-1 classes joins the training set, labelled by its
label maps only (`repro.pipeline.with_extra_data`; sizes in the profile's `extra_data`).
"""
from repro.claims import Claim
from repro.config import architecture_changes, with_changes
from repro.experiment import Context, TrainingExperiment, annotator_report
from repro.pipeline import train_student

CUTMIX = {"supervision.mode": "relabel", "supervision.cutmix": True,
          "train.opt": "adamp", "train.lr": 2e-3, "train.weight_decay": 1e-2}
SETTINGS = {
    "vanilla": {"supervision.mode": "original"},
    "relabel": {"supervision.mode": "relabel"},
    "relabel_cutmix": CUTMIX,
}
ARCHITECTURES = ("resnet50", "resnet101")
EXTRA_DATA = ("resnet50", "relabel_cutmix_extra_data")  # the paper's extra-data row is ResNet-50's only


def runs(config):
    settings = {(arch, setting): {**architecture_changes(config, arch), **changes}
                for arch in ARCHITECTURES for setting, changes in SETTINGS.items()}
    settings[EXTRA_DATA] = {**settings[("resnet50", "relabel_cutmix")], "extra_data.enabled": True}
    return settings


def report(ctx: Context) -> str:
    """The annotator's diagnostics, and what the extra data changed: images kept, and the training set's size and
    updates against + ReLabel + CutMix's (the same epochs over more images are more updates)."""
    seed, settings = ctx.seeds[0], runs(ctx.config)
    extra, base = (train_student(with_changes(ctx.config, {**settings[key], "seed": seed}), ctx.runs_root)
                   for key in (EXTRA_DATA, ("resnet50", "relabel_cutmix")))
    return "\n".join([
        annotator_report(ctx),
        f"extra data (seed {seed}): {extra['extra_images']} of the pool's {extra['extra_pool_images']} images kept "
        f"({extra['extra_images_per_class_min']}-{extra['extra_images_per_class_max']} per top-1 class); the "
        f"student trains on {extra['train_images']} images for {extra['updates']} updates, + ReLabel + CutMix on "
        f"{base['train_images']} for {base['updates']}"])


EXPERIMENT = TrainingExperiment(
    name="table5",
    title="ResNet-50/101: vanilla, + ReLabel, + ReLabel + CutMix, + extra data",
    paper_ref="Table 5",
    runs=runs,
    report=report,
    metrics=["imagenet_top1"],
    claims=[claim for arch in ARCHITECTURES for claim in (
        Claim(f"{arch}: + ReLabel > vanilla", better="relabel", worse="vanilla", model=arch),
        Claim(f"{arch}: + ReLabel + CutMix > + ReLabel", better="relabel_cutmix", worse="relabel", model=arch),
    )] + [Claim("resnet50: + extra data > + ReLabel + CutMix", better=EXTRA_DATA[1], worse="relabel_cutmix",
                model="resnet50")],
)
