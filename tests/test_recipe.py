"""The official training recipe as the paper profile's default (docs/training.md, Recipe): warm-up from lr 0,
weight decay on every parameter, PCA lighting, CutMix partners by a random permutation, EfficientNets at their own
resolutions, Figure 6's KD students at batch 256; and the embedded profiles' specs exactly as they were."""
import math

import numpy as np
import pytest
import torch
from timm.data import IMAGENET_DEFAULT_STD

from repro.config import architecture_changes, profile_config, with_changes
from repro.crops import crop_rng
from repro.data import TrainCrop, TrainCrops, image_folder, open_imagenet
from repro.data.transforms import IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC, read_image
from repro.figures.figure6 import kd_student_changes
from repro.evaluate.classification import amp_dtype
from repro.models import create_model
from repro.pipeline import annotator_spec, kd_changes, resources, student_spec
from repro.runs import Run
from repro.specs import Spec
from repro.sweeps import kd_teachers
from repro.train import cutmix, objective_spec, train_classifier
from repro.train import trainer
from repro.train.objectives import objective_class
from tests.fixtures import NUM_CLASSES, tiny_config

# Student and annotator spec hashes of the embedded profiles, computed on commit 3f3126a (before these options):
# the recorded smoke numbers (tests/regression/smoke.json) and the cached proxy runs belong to these specs.
RECORDED_HASHES = {
    ("smoke", "annotator"): "2fe6e19baf74c971",
    ("smoke", "original"): "9ba62d161abb71b5",
    ("smoke", "relabel_cutmix"): "1c0a57003948392f",
    ("smoke", "label_smoothing_cutmix"): "c3ffd3e9a3363502",
    ("smoke", "kd_cutmix"): "44e8ca6078d092d5",
    ("smoke", "efficientnet_b2"): "1cc9be808de31488",
    ("proxy", "annotator"): "57dde2158896cc78",
    ("proxy", "original"): "1f1d8e33513c1059",
    ("proxy", "relabel_cutmix"): "fb0888aa058b7af6",
    ("proxy", "label_smoothing_cutmix"): "1ba768f17be4fbde",
    ("proxy", "kd_cutmix"): "4ed9fb5f1d5f20ab",
    ("proxy", "efficientnet_b2"): "8dbb52f880b5c96a",
}


def _embedded_students(profile):
    cfg = profile_config(profile)
    return cfg, {
        "original": {},
        "relabel_cutmix": {"supervision.mode": "relabel", "supervision.cutmix": True},
        "label_smoothing_cutmix": {"supervision.mode": "label_smoothing", "supervision.cutmix": True},
        # as Figure 6 builds its KD students
        "kd_cutmix": {**kd_student_changes(cfg, cfg), "supervision.cutmix": True},
        "efficientnet_b2": architecture_changes(cfg, "efficientnet_b2"),
    }


@pytest.mark.parametrize("profile", ["smoke", "proxy"])
def test_the_embedded_profiles_specs_are_those_their_runs_were_recorded_under(profile):
    cfg, students = _embedded_students(profile)
    assert annotator_spec(cfg).hash == RECORDED_HASHES[(profile, "annotator")]
    for name, changes in students.items():
        assert student_spec(with_changes(cfg, changes)).hash == RECORDED_HASHES[(profile, name)], name
    # the options are in the config, so `--set train.lighting=0.1` works at any profile, and reach the spec once set
    assert (cfg["train"]["lighting"], cfg["train"]["decay_norm_and_bias"]) == (0.0, False)
    assert "lighting" not in student_spec(cfg)["train"]
    assert student_spec(with_changes(cfg, {"train.lighting": 0.1}))["train"]["lighting"] == 0.1


def test_warmup_starts_at_lr_zero_at_paper_scale_as_the_official_schedule():
    paper = profile_config("paper")["train"]
    assert paper["warmup_lr"] == 0.0
    assert profile_config("proxy")["train"]["warmup_lr"] == profile_config("smoke")["train"]["warmup_lr"] == 1e-3
    # timm's cosine schedule as the trainer builds it: update k of the warm-up runs at k / warmup updates x lr, the
    # official code's warmup_lr + (lr - warmup_lr) * k / (warmup_epochs * updates_per_epoch); the first is at 0
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=paper["lr"])
    updates_per_epoch = 10
    scheduler = trainer.make_scheduler(optimizer, paper, updates_per_epoch)
    warmup_updates = paper["warmup_epochs"] * updates_per_epoch
    for k in range(warmup_updates):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(paper["lr"] * k / warmup_updates, abs=1e-12)
        scheduler.step_update(num_updates=k + 1)


@pytest.mark.parametrize("prefix", [True, False])
def test_the_cosine_starts_after_the_warmup_at_paper_scale(prefix):
    paper = {**profile_config("paper")["train"], "warmup_prefix": prefix}
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=paper["lr"])
    scheduler = trainer.make_scheduler(optimizer, paper, updates_per_epoch=10)
    scheduler.step_update(num_updates=paper["warmup_epochs"] * 10)
    after_warmup = optimizer.param_groups[0]["lr"]
    if prefix:  # the official schedule: the full lr right after the warm-up
        assert after_warmup == pytest.approx(paper["lr"])
    else:  # the cosine spanned the warm-up's epochs too
        assert after_warmup < paper["lr"] * (1 - 1e-4)
    assert profile_config("proxy")["train"]["warmup_prefix"] is False


def test_the_cosine_ends_with_the_last_epoch_at_paper_scale_as_the_official_schedule():
    paper = profile_config("paper")["train"]
    epochs, warmup, per_epoch = paper["epochs"], paper["warmup_epochs"], 10
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=paper["lr"])
    scheduler = trainer.make_scheduler(optimizer, paper, updates_per_epoch=per_epoch)
    for update in range(warmup * per_epoch, epochs * per_epoch, 997):  # the official lr of each update after warm-up
        scheduler.step_update(num_updates=update)
        official = paper["lr"] * (math.cos(math.pi * (update - warmup * per_epoch) / ((epochs - warmup) * per_epoch))
                                  + 1) / 2
        assert optimizer.param_groups[0]["lr"] == pytest.approx(official, rel=1e-9, abs=1e-12)
    scheduler.step_update(num_updates=epochs * per_epoch - 1)  # the last update, at a few millionths of lr
    assert optimizer.param_groups[0]["lr"] < paper["lr"] * 1e-5
    # the option is in the paper student's spec (a run of the schedule before it has another hash, and keeps it)
    assert student_spec(profile_config("paper") | {"data": {**profile_config("paper")["data"], "root": "/x"}}
                        )["train"]["decay_ends_with_training"] is True
    former = trainer.make_scheduler(optimizer, {**paper, "decay_ends_with_training": False}, per_epoch)
    former.step_update(num_updates=epochs * per_epoch - 1)
    assert optimizer.param_groups[0]["lr"] > paper["lr"] * 5e-4  # cut short of 0 by the end of training
    with pytest.raises(ValueError, match="train.epochs = 5 leaves no epoch after train.warmup_epochs = 5"):
        trainer.make_scheduler(optimizer, {**paper, "epochs": 5}, updates_per_epoch=per_epoch)


def _decay_of_parameters(model, train_cfg):
    optimizer = trainer.make_optimizer(model, train_cfg)
    return {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}


@pytest.mark.parametrize("opt", ["sgd", "adamp"])
def test_norm_and_bias_parameters_are_decayed_at_paper_scale_and_exempt_where_the_option_is_off(opt):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(36, 2))
    paper = {**profile_config("paper")["train"], "opt": opt}
    one_d = [p for p in model.parameters() if p.ndim <= 1]
    assert paper["decay_norm_and_bias"] and len(one_d) == 4  # BN weight and bias, two biases
    decay = _decay_of_parameters(model, paper)
    assert set(decay.values()) == {paper["weight_decay"]}
    # the embedded profiles, and a spec without the option, exempt them as before
    for train_cfg in (profile_config("proxy")["train"], student_spec(profile_config("proxy"))["train"]):
        decay = _decay_of_parameters(model, {**train_cfg, "opt": opt})
        assert all(decay[id(p)] == 0.0 for p in one_d)
        assert all(decay[id(p)] == train_cfg["weight_decay"] for p in model.parameters() if p.ndim > 1)


def _crop(imagenet, lighting, seed, epoch, index, size=32):
    images = image_folder(imagenet.root, "train", imagenet.wnids)
    return TrainCrop(size, lighting=lighting)(read_image(images.path(index)), crop_rng(seed, epoch, index))


def test_lighting_shifts_each_channel_by_the_pca_noise_drawn_from_the_crops_own_generator(imagenet):
    assert profile_config("paper")["train"]["lighting"] == 0.1
    plain, box = _crop(imagenet, 0.0, seed=3, epoch=1, index=5)
    lit, lit_box = _crop(imagenet, 0.1, seed=3, epoch=1, index=5)
    assert torch.equal(box, lit_box) and torch.equal(lit, _crop(imagenet, 0.1, seed=3, epoch=1, index=5)[0])
    # the draw comes after the box, flip and jitter: the same generator continued gives the noise's alpha
    rng = crop_rng(3, 1, 5)
    images = image_folder(imagenet.root, "train", imagenet.wnids)
    TrainCrop(32)(read_image(images.path(5)), rng)
    alpha = torch.as_tensor(rng.normal(0.0, 0.1, size=3), dtype=torch.float32)
    shift = (IMAGENET_PCA_EIGVEC @ (alpha * IMAGENET_PCA_EIGVAL)) / torch.tensor(IMAGENET_DEFAULT_STD)
    assert torch.allclose(lit - plain, shift.view(3, 1, 1).expand_as(plain), atol=1e-5)
    assert shift.abs().min() > 1e-4
    other_epoch, _ = _crop(imagenet, 0.1, seed=3, epoch=2, index=5)
    assert not torch.equal(other_epoch, lit)
    # a key of the dataset gives the same sample whenever it is built (workers, resume)
    dataset = TrainCrops(images, TrainCrop(32, lighting=0.1), seed=3)
    assert torch.equal(dataset[(1, 5)]["image"], lit) and torch.equal(dataset[(1, 5)]["image"], lit)


class CropBuilt(Exception):
    pass


def test_the_trainer_crops_with_the_specs_lighting(imagenet, tmp_path, monkeypatch):
    seen = []

    class RecordingCrop(TrainCrop):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(self.lighting)
            raise CropBuilt  # what is checked is known: no need to train

    monkeypatch.setattr(trainer, "TrainCrop", RecordingCrop)
    data = open_imagenet(imagenet.root, {"source": "world"})
    for lighting in (0.1, 0.0):  # at 0.0 the spec leaves the option out, as the embedded profiles' specs do
        cfg = tiny_config(**{"train.lighting": lighting})
        train_cfg = student_spec(cfg)["train"]
        assert ("lighting" in train_cfg) == (lighting > 0)
        run = Run(Spec("train", train_cfg), tmp_path).create()
        with pytest.raises(CropBuilt):
            train_classifier(run, train_cfg, data, objective_spec(cfg["supervision"]), seed=0,
                             resources=resources(cfg, tmp_path))
    assert seen == [0.1, 0.0]


def test_permutation_pairing_draws_partners_from_the_cutmix_generator_and_mixes_targets_alike():
    images = torch.arange(8, dtype=torch.float32)[:, None, None, None].expand(8, 3, 20, 16).clone()
    targets = torch.softmax(torch.randn(8, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    mixed, mixed_targets, lam = cutmix(images, targets, np.random.default_rng(4), pairing="permutation")
    again, _, _ = cutmix(images, targets, np.random.default_rng(4), pairing="permutation")
    assert torch.equal(mixed, again)
    pasted = mixed != images
    assert 0 < lam < 1
    # every image's pasted box shows one partner (fixed points paste themselves, as torch.randperm's may)
    partners = [int(mixed[i][pasted[i]].unique().item()) if pasted[i].any() else i for i in range(8)]
    assert sorted(partners) == list(range(8)) and partners != list(range(8))[::-1]
    assert torch.allclose(mixed_targets, lam * targets + (1 - lam) * targets[partners])
    with pytest.raises(ValueError, match="unknown supervision.cutmix_pairing 'sorted'"):
        cutmix(images, targets, np.random.default_rng(4), pairing="sorted")


def test_cutmix_pairing_is_an_objective_field_only_with_cutmix_and_reads_reversed_where_absent():
    paper = profile_config("paper")
    assert paper["supervision"]["cutmix_pairing"] == "permutation"
    on = with_changes(paper, {"supervision.mode": "relabel", "supervision.cutmix": True})["supervision"]
    assert objective_spec(on)["cutmix_pairing"] == "permutation"
    assert "cutmix_pairing" not in objective_spec({**on, "cutmix": False})
    proxy = with_changes(profile_config("proxy"), {"supervision.cutmix": True})["supervision"]
    assert proxy["cutmix_pairing"] == "reversed" and "cutmix_pairing" not in objective_spec(proxy)
    for supervision, pairing in ((on, "permutation"), (proxy, "reversed")):
        objective = objective_class(supervision["mode"])(objective_spec(supervision), NUM_CLASSES, 32,
                                                         torch.device("cpu"))
        assert objective.cutmix_pairing == pairing


def test_efficientnets_train_and_evaluate_at_their_own_resolution_at_paper_scale():
    paper, proxy = profile_config("paper"), profile_config("proxy")
    for arch, size in (("efficientnet_b0", 224), ("efficientnet_b1", 240), ("efficientnet_b2", 260),
                       ("efficientnet_b3", 300)):
        train = with_changes(paper, architecture_changes(paper, arch))["train"]
        assert (train["crop_size"], train["eval_size"]) == (size, size), arch
        embedded = with_changes(proxy, architecture_changes(proxy, arch))["train"]
        assert (embedded["crop_size"], embedded["eval_size"]) == (proxy["train"]["crop_size"],
                                                                  proxy["train"]["eval_size"])


def test_figure6_kd_students_train_at_the_appendix_batch_and_lr_at_paper_scale():
    paper = profile_config("paper")
    teachers = kd_teachers(paper)
    assert list(teachers) == ["efficientnet_b1", "efficientnet_b3", "efficientnet_b5", "efficientnet_b7"]
    for changes in teachers.values():
        student = student_spec(with_changes(paper, kd_student_changes(paper, with_changes(paper, changes))))
        assert student["objective"]["mode"] == "kd"
        assert (student["train"]["batch_size"], student["train"]["lr"]) == (256, 0.1)
    # the vanilla and ReLabel students of the figure keep the main recipe's batch
    assert student_spec(paper)["train"]["batch_size"] == 1024
    proxy = profile_config("proxy")
    assert kd_student_changes(proxy, proxy) == kd_changes(proxy)


def test_paper_resnets_start_as_torchvisions_which_the_official_code_trains():
    cfg = profile_config("paper")
    specs = [cfg["train"]["model"], *(architecture_changes(cfg, name)["train.model"]
                                      for name in ("resnet18", "resnet50", "resnet101"))]
    for spec in specs:  # timm's default would zero every block's last BatchNorm weight
        model = create_model(spec, num_classes=10)
        last_norms = [block.bn3 if hasattr(block, "bn3") else block.bn2 for block in model.layer1]
        assert all(bool((norm.weight == 1).all()) for norm in last_norms), spec


@pytest.mark.parametrize("native, dtype", [(False, torch.float16), (True, torch.bfloat16)])
def test_mixed_precision_is_fp16_where_bf16_is_only_emulated(monkeypatch, native, dtype):
    # torch's default answer counts emulated bf16 (a V100, a T4) as supported
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)
    assert amp_dtype() == dtype
