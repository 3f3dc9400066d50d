"""Table 7's evaluators and sets: FGSM, the ImageNet-C corruptions and mCE, class-restricted ImageNet-A/-R scoring,
the world's backgrounds composites, and the paper-scale readers on tiny folders in the released layouts."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from repro.config import profile_config, with_changes
from repro.data import open_imagenet
from repro.evaluate.corruptions import ALEXNET_ERRORS, CORRUPTIONS, SEVERITIES, corrupt, corruption_errors
from repro.evaluate.evaluators import build_evaluator
from repro.evaluate.robustness import class_folder_top1, fgsm_top1
from repro.models import create_model
from repro.pipeline import robustness_evaluations
from repro.runs import Resources
from tests.fixtures import NUM_CLASSES, TINY_MODEL, tiny_config

VIEW = {"size": 32, "crop_pct": 1.0}


@pytest.fixture(scope="module")
def data(imagenet):
    return open_imagenet(imagenet.root, {"source": "world"})


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """The tiny model trained for a few epochs on the fixture (well above chance on its val images)."""
    from repro.pipeline import resources
    from repro.runs import Run
    from repro.specs import Spec
    from repro.train import objective_spec, train_classifier

    cfg = tiny_config(**{"train.epochs": 6, "train.warmup_epochs": 0, "train.lr": 0.05})
    run = Run(Spec("train", cfg), tmp_path_factory.mktemp("runs")).create()
    train_classifier(run, cfg["train"], data, objective_spec(cfg["supervision"]), seed=0,
                     resources=resources(cfg, run.dir), eval_every=0)
    from repro.models import load_model

    return load_model(run.dir / "model.pt")


def test_fgsm_at_zero_is_clean_accuracy_and_does_not_rise_with_epsilon(trained, data):
    resources = Resources(runs_root=".", batch_size_eval=7)
    metrics = build_evaluator({"type": "fgsm", "epsilons": [0, 1, 2, 4, 8, 16]}).evaluate(trained, data, VIEW,
                                                                                          resources)
    clean = build_evaluator({"type": "topk"}).evaluate(trained, data, VIEW, resources)["imagenet_top1"]
    assert metrics["fgsm_top1_eps0"] == clean > 100.0 / NUM_CLASSES
    sweep = [metrics[f"fgsm_top1_eps{e}"] for e in (0, 1, 2, 4, 8, 16)]
    assert all(a >= b for a, b in zip(sweep, sweep[1:])) and sweep[-1] < sweep[0], sweep
    assert metrics["fgsm_top1"] == metrics["fgsm_top1_eps8"]  # the default epsilon, 8/255


def test_fgsm_uses_eval_mode_and_leaves_no_gradient(data):
    torch.manual_seed(0)
    model = create_model({**TINY_MODEL, "kwargs": {**TINY_MODEL["kwargs"], "drop_rate": 0.5}}, NUM_CLASSES).train()
    first = fgsm_top1(model, data.val, [0.0, 4.0], VIEW, Resources(runs_root="."))
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert fgsm_top1(model, data.val, [0.0, 4.0], VIEW, Resources(runs_root=".")) == first  # no dropout noise


def test_each_corruption_runs_at_each_severity_deterministically():
    pixels = np.asarray(Image.new("RGB", (40, 36), (120, 80, 40)).effect_spread(4))
    for name in CORRUPTIONS:
        for severity in SEVERITIES:
            out = corrupt(pixels, name, severity, seed=3)
            assert out.shape == pixels.shape and out.dtype == np.uint8, (name, severity)
            assert np.array_equal(out, corrupt(pixels, name, severity, seed=3)), (name, severity)
    with pytest.raises(ValueError, match="unknown corruption 'blur'"):
        corrupt(pixels, "blur", 1, 0)


def test_mce_is_100_for_alexnets_errors_and_the_mean_covers_all_75():
    top1 = {(name, s): 100.0 * (1 - ALEXNET_ERRORS[name]) for name in CORRUPTIONS for s in SEVERITIES}
    metrics = corruption_errors(top1)
    assert metrics["imagenet_c_mce"] == pytest.approx(100.0)
    assert metrics["imagenet_c_top1"] == pytest.approx(np.mean(list(top1.values())))
    assert metrics["imagenet_c_ce_fog"] == pytest.approx(100.0)


def test_a_set_of_some_classes_is_scored_over_those_classes_only(data, tmp_path):
    folder = tmp_path / "imagenet-a"
    for relpath, label in zip(data.val.relpaths, data.val.labels):
        if label in (1, 2):  # two of the twelve classes, as ImageNet-A holds 200 of ImageNet's 1000
            (folder / data.wnids[label]).mkdir(parents=True, exist_ok=True)
            shutil.copy(data.val.root / relpath, folder / data.wnids[label])

    class AlwaysClassZero(torch.nn.Module):  # prefers class 0 (absent), then class 2
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.tensor([5.0, 0.0, 1.0] + [0.0] * (NUM_CLASSES - 3)))

        def forward(self, x):
            return self.bias.expand(len(x), -1)

    top1, count, hits = class_folder_top1(AlwaysClassZero(), folder, data.wnids, VIEW, Resources(runs_root="."))
    assert count == 4 and top1 == 50.0  # restricted to classes 1 and 2, every image is called class 2


def fake_released_sets(root, data):
    """ImageNet-C, -A, -R and the backgrounds layout under root, each holding copies of two val images."""
    pairs = list(zip(data.val.relpaths, data.val.labels))[:2]
    folders = [root / "imagenet-a", root / "imagenet-r", *(root / "backgrounds" / v for v in
                                                           ("mixed_same", "mixed_rand", "challenge/0", "challenge/1"))]
    folders += [root / "imagenet-c" / name / str(s) for name in CORRUPTIONS for s in SEVERITIES]
    for folder in folders:
        for relpath, label in pairs:
            (folder / data.wnids[label]).mkdir(parents=True, exist_ok=True)
            shutil.copy(data.val.root / relpath, folder / data.wnids[label])


def test_paper_scale_reads_the_released_layouts(imagenet, data, tmp_path):
    root = tmp_path / "imagenet"
    shutil.copytree(imagenet.root, root)
    fake_released_sets(root, data)
    cfg = with_changes(profile_config("paper"), {"data.root": str(root)})
    evaluations = robustness_evaluations(cfg)
    assert [e["type"] for e in evaluations] == ["fgsm", "imagenet_c", "imagenet_a", "rendition", "backgrounds"]
    torch.manual_seed(0)
    model = create_model(TINY_MODEL, NUM_CLASSES)
    metrics = {}
    for evaluation in evaluations[1:]:
        metrics.update(build_evaluator(evaluation).evaluate(model, data, VIEW, Resources(runs_root=tmp_path)))
    assert metrics["imagenet_c_images"] == 2 * 75 and metrics["imagenet_a_images"] == 2
    assert metrics["rendition_images"] == 2 and metrics["challenge_backgrounds"] == 2
    for key in ("imagenet_c_top1", "imagenet_a_top1", "rendition_top1", "bcg_top1", "mixed_same_top1"):
        assert 0.0 <= metrics[key] <= 100.0, key
    shutil.rmtree(root / "imagenet-c" / "fog" / "3")
    with pytest.raises(FileNotFoundError, match="imagenet-c/fog/3"):
        build_evaluator(evaluations[1]).evaluate(model, data, VIEW, Resources(runs_root=tmp_path))
    missing = robustness_evaluations(with_changes(cfg, {"robustness.imagenet_a_root": str(tmp_path / "no")}))[2]
    with pytest.raises(FileNotFoundError, match="set robustness.imagenet_a_root"):
        build_evaluator(missing).evaluate(model, data, VIEW, Resources(runs_root=tmp_path))


def test_world_backgrounds_keep_the_foreground_and_change_only_the_background(tmp_path):
    from repro.world.params import SCENE, world_params
    from repro.world.parts import Part, bare_background, draw, load_assets
    from repro.world.robustness import _composite

    params = world_params("smoke")
    assets = load_assets(params)
    part = Part("val", params["n_val"], {key: params[key] for key in SCENE})
    _, placed = draw(assets, part, 3)
    primary = next(p for p in placed if p.primary)
    same, other = (np.asarray(_composite(bare_background(assets, part, j), primary)) for j in (3 + 52, 4))
    alpha = np.zeros(same.shape[:2], dtype=bool)
    patch_alpha = np.asarray(primary.patch.getchannel("A")) == 255
    y0, x0 = primary.y0, primary.x0
    for y, x in zip(*np.nonzero(patch_alpha)):
        if 0 <= y + y0 < alpha.shape[0] and 0 <= x + x0 < alpha.shape[1]:
            alpha[y + y0, x + x0] = True
    assert alpha.any() and np.array_equal(same[alpha], other[alpha])  # the same object, pixel for pixel
    assert not np.array_equal(same[~alpha], other[~alpha])  # on two backgrounds
    assert np.array_equal(np.asarray(bare_background(assets, part, 4)), np.asarray(bare_background(assets, part, 4)))


def test_the_check_names_a_missing_released_set_before_any_training(imagenet, data, tmp_path, capsys):
    from repro.cli import main

    root = tmp_path / "imagenet"
    shutil.copytree(imagenet.root, root)
    fake_released_sets(root, data)
    shutil.rmtree(root / "imagenet-a")
    status = main(["check", "table7", "--profile", "paper", "--set", f"data.root={root}", "--runs", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2 and f"problem: imagenet_a: no folder {root / 'imagenet-a'}: put the released set there or " \
                           f"set robustness.imagenet_a_root" in err
    assert "problem: imagenet_c" not in err  # present
