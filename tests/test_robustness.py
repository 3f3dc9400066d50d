"""Table 7's evaluators and sets: FGSM, the ImageNet-C corruptions and mCE, class-restricted ImageNet-A/-R scoring,
the world's backgrounds composites, and the paper-scale readers on tiny folders in the released layouts."""
from __future__ import annotations

import shutil
from pathlib import Path

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


def test_fgsm_taken_in_chunks_attacks_as_the_whole_batch(trained, data, monkeypatch):
    """The gradient is taken a few images at a time (memory at paper scale): each image's attack is its own."""
    from repro.evaluate import robustness

    whole = fgsm_top1(trained, data.val, [1.0, 4.0, 8.0], VIEW, Resources(runs_root=".", batch_size_eval=64))
    monkeypatch.setattr(robustness, "FGSM_CHUNK", 3)
    assert fgsm_top1(trained, data.val, [1.0, 4.0, 8.0], VIEW, Resources(runs_root=".", batch_size_eval=64)) == whole


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
    folders = [root / "imagenet-a", root / "imagenet-r",
               *(root / "backgrounds" / v / "val" for v in ("original", "mixed_same", "mixed_rand", "only_bg_t"))]
    folders += [root / "imagenet-c" / name / str(s) for name in CORRUPTIONS for s in SEVERITIES]
    for folder in folders:
        for relpath, label in pairs:
            (folder / data.wnids[label]).mkdir(parents=True, exist_ok=True)
            shutil.copy(data.val.root / relpath, folder / data.wnids[label])
    for relpath, label in pairs:
        with Image.open(data.val.root / relpath) as image:
            mask = np.zeros((image.height, image.width), dtype=np.uint8)
        mask[: mask.shape[0] // 2] = 1
        target = root / "backgrounds" / "fg_mask" / "val" / data.wnids[label] / (Path(relpath).stem + ".npy")
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, mask)


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
    assert metrics["rendition_images"] == 2 and metrics["challenge_backgrounds"] == 2  # the paper's: all of them
    assert metrics["challenge_foregrounds"] == 2 and metrics["original_images"] == 2
    for key in ("imagenet_c_top1", "imagenet_a_top1", "rendition_top1", "bcg_top1", "mixed_same_top1"):
        assert 0.0 <= metrics[key] <= 100.0, key
    shutil.rmtree(root / "imagenet-c" / "fog" / "3")
    with pytest.raises(FileNotFoundError, match="imagenet-c/fog/3"):
        build_evaluator(evaluations[1]).evaluate(model, data, VIEW, Resources(runs_root=tmp_path))
    missing = robustness_evaluations(with_changes(cfg, {"robustness.imagenet_a_root": str(tmp_path / "no")}))[2]
    with pytest.raises(FileNotFoundError, match="set robustness.imagenet_a_root"):
        build_evaluator(missing).evaluate(model, data, VIEW, Resources(runs_root=tmp_path))


def test_world_backgrounds_are_imagenet9s_variants_of_the_val_images(tmp_path):
    from repro.world.params import SCENE, world_params
    from repro.world.parts import Part, bare_background, draw, image_path, load_assets
    from repro.world.robustness import write_backgrounds

    params = world_params("smoke")
    assets = load_assets(params)
    part = Part("val", params["n_val"], {key: params[key] for key in SCENE})
    indices = [3, 4, 3 + 52]  # 3 and 55 share a class
    for i in indices:  # the world's val images, as the world writes them
        target = tmp_path / "world" / image_path(assets, "val", i)
        target.parent.mkdir(parents=True, exist_ok=True)
        draw(assets, part, i)[0].save(target, quality=90)
    out = tmp_path / "set"
    assert write_backgrounds(assets, tmp_path / "world", indices, out, seed=0, progress=False)["images"] == 3
    relpath = image_path(assets, "val", 3)[len("val/"):]
    read = {v: np.asarray(Image.open(out / v / "val" / relpath), dtype=np.float32)
            for v in ("original", "only_bg_t", "mixed_same", "mixed_rand")}
    mask = np.load(out / "fg_mask" / "val" / relpath.replace(".JPEG", ".npy")).astype(bool)
    assert mask.shape == read["original"].shape[:2] and 0 < mask.mean() < 0.9
    assert np.array_equal(mask, next(p for p in draw(assets, part, 3)[1] if p.primary).mask)
    assert np.abs(read["only_bg_t"] - np.asarray(bare_background(assets, part, 3))).mean() < 4  # up to JPEG
    for variant in ("mixed_same", "mixed_rand"):  # the same object, pixel for pixel up to JPEG, on another ground
        assert np.abs(read[variant][mask] - read["original"][mask]).mean() < 6, variant
    assert np.abs(read["mixed_same"][~mask] - read["mixed_rand"][~mask]).mean() > 10


def solid(colour, size=16, square=None):
    """A size x size image of `colour`, with a red square (y0, y1, x0, x1) if given."""
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    pixels[...] = colour
    if square:
        y0, y1, x0, x1 = square
        pixels[y0:y1, x0:x1] = (255, 0, 0)
    return pixels


class CentreIsRed(torch.nn.Module):
    """An ImageNet model that calls an image a Chihuahua (ImageNet-9's dog) when its centre pixel is red, else a
    goldfinch (bird)."""
    def __init__(self, wnids):
        super().__init__()
        self.dog, self.bird = wnids.index("n02085620"), wnids.index("n01531178")
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.n = len(wnids)

    def forward(self, x):
        centre = x[:, :, x.shape[2] // 2, x.shape[3] // 2]
        red = centre[:, 0] > centre[:, 1]
        logits = torch.zeros(len(x), self.n) + self.anchor
        logits[red, self.dog] = 1.0
        logits[~red, self.bird] = 1.0
        return logits


def test_imagenet9_is_scored_by_super_class_and_the_challenge_by_the_worst_background(tmp_path):
    """A tiny ImageNet-9 release: 9 super-class folders, a 1000-class model mapped through the super-classes, and
    the challenge counting a foreground only if it survives every background."""
    from types import SimpleNamespace

    import timm

    wnids = (Path(timm.__file__).parent / "data" / "_info" / "imagenet_synsets.txt").read_text().split()
    classes = [f"0{k}_{name}" for k, name in enumerate(
        ["dog", "bird", "wheeled vehicle", "reptile", "carnivore", "insect", "musical instrument", "primate", "fish"])]
    green, centre, corner = (0, 255, 0), (4, 12, 4, 12), (0, 4, 0, 4)
    # a: a dog, red at the centre, right on every background; b: a dog masked off the centre, called a bird in
    # the original and on green; c: a green bird masked off the centre, right on green but not on red
    foregrounds = {"a": (0, solid(green, square=centre), centre), "b": (0, solid(green, square=corner), corner),
                   "c": (1, solid(green), corner)}
    backgrounds = {"g": (3, solid(green)), "r": (5, solid((255, 0, 0)))}
    root = tmp_path / "bg_challenge"

    def save(variant, label, name, pixels):
        target = root / variant / "val" / classes[label] / f"{name}.JPEG"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(target, quality=100)

    for name, (label, pixels, (y0, y1, x0, x1)) in foregrounds.items():
        for variant in ("original", "mixed_same", "mixed_rand"):
            save(variant, label, name, pixels)
        mask = np.zeros(pixels.shape[:2], dtype=np.uint8)
        mask[y0:y1, x0:x1] = 1
        (root / "fg_mask" / "val" / classes[label]).mkdir(parents=True, exist_ok=True)
        np.save(root / "fg_mask" / "val" / classes[label] / f"{name}.npy", mask)
    for name, (label, pixels) in backgrounds.items():
        save("only_bg_t", label, name, pixels)
    for k in range(9):  # every class folder, as the release has
        (root / "original" / "val" / classes[k]).mkdir(parents=True, exist_ok=True)
    model = CentreIsRed(wnids)
    data = SimpleNamespace(root=tmp_path, wnids=wnids)
    evaluate = build_evaluator({"type": "backgrounds", "source": str(root)}).evaluate
    metrics = evaluate(model, data, {"size": 16, "crop_pct": 0.875}, Resources(runs_root=tmp_path, batch_size_eval=1))
    assert metrics["original_top1"] == pytest.approx(200 / 3)  # a and c right, b (green centre) called a bird
    assert metrics["challenge_backgrounds"] == 2 and metrics["challenge_foregrounds"] == 3
    assert metrics["bcg_top1"] == pytest.approx(100 / 3)  # only a survives both backgrounds
    one = build_evaluator({"type": "backgrounds", "source": str(root), "challenge_backgrounds": 1}).evaluate(
        model, data, {"size": 16, "crop_pct": 0.875}, Resources(runs_root=tmp_path))
    assert one["challenge_backgrounds"] == 1 and one["bcg_top1"] in (pytest.approx(100 / 3), pytest.approx(200 / 3))


def test_set_classes_are_the_models_wnids_or_imagenet9s_super_classes(tmp_path):
    import timm

    from repro.evaluate.set_classes import imagenet9_classes, set_classes

    wnids = (Path(timm.__file__).parent / "data" / "_info" / "imagenet_synsets.txt").read_text().split()
    for name in ("n01440764", "n02085620"):  # tench, Chihuahua: a two-class ImageNet-A-like set
        (tmp_path / "a" / name).mkdir(parents=True)
    subset = set_classes(tmp_path / "a", wnids)
    logits = torch.zeros(2, 1000)
    logits[0, wnids.index("n02085620")], logits[0, 5] = 2.0, 3.0  # class 5 is outside the set: ignored
    logits[1, wnids.index("n01440764")] = 1.0
    assert subset.predict(logits).tolist() == [1, 0]
    released = [f"0{k}_{name}" for k, name in enumerate(["dog", "bird", "wheeled vehicle", "reptile", "carnivore",
                                                          "insect", "musical instrument", "primate", "fish"])]
    for name in released:
        (tmp_path / "in9" / name).mkdir(parents=True)
        (tmp_path / "renamed" / name[3:]).mkdir(parents=True)  # a copy without the prefixes: sorts bird, ..., dog
    in9 = set_classes(tmp_path / "in9", wnids)
    with pytest.raises(ValueError, match="class folder 'bird' is in the place of ImageNet-9's 'dog'"):
        set_classes(tmp_path / "renamed", wnids)
    hits = torch.zeros(3, 1000)
    hits[0, wnids.index("n02085620")] = 1.0  # Chihuahua: dog
    hits[1, wnids.index("n01440764")] = 1.0  # tench: fish
    hits[2, wnids.index("n15075141")] = 1.0  # toilet tissue: in no super-class
    assert in9.predict(hits).tolist() == [0, 8, -1]
    assert sum(len(group) for _, group in imagenet9_classes()) == 370  # the release's 1000 - 630 unmapped
    with pytest.raises(ValueError, match="needs a model of ImageNet's classes; 370 of their 370"):
        set_classes(tmp_path / "in9", [f"n9{k:07d}" for k in range(12)])
    with pytest.raises(ValueError, match="neither the model's classes"):
        set_classes(tmp_path / "a", [f"n9{k:07d}" for k in range(12)])


def test_the_check_names_a_missing_released_set_before_any_training(imagenet, data, tmp_path, capsys):
    from repro.cli import main

    root = tmp_path / "imagenet"
    shutil.copytree(imagenet.root, root)
    fake_released_sets(root, data)
    shutil.rmtree(root / "imagenet-a")
    shutil.rmtree(root / "backgrounds" / "fg_mask")
    status = main(["check", "table7", "--profile", "paper", "--set", f"data.root={root}", "--runs", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2 and f"problem: imagenet_a: no folder {root / 'imagenet-a'}: put the released set there or " \
                           f"set robustness.imagenet_a_root" in err
    assert f"problem: backgrounds: no folder {root / 'backgrounds' / 'fg_mask' / 'val'} (1 of the 5 folders the " \
           f"release holds are missing" in err
    assert "problem: imagenet_c" not in err  # present
    # the fixture's sets are a few images: each set read whole is named as short of its release
    held = len(list((root / "imagenet-r").rglob("*.JPEG")))
    assert f"absent: rendition: {30_000 - held:,} of the release's 30,000 images are not under " \
           f"{root / 'imagenet-r'} ({held:,} are)" in err


def test_the_check_reads_every_imagenet_c_folder_and_each_sets_classes_before_any_training(imagenet, data, tmp_path,
                                                                                           capsys):
    """A set that would fail or mislead only when the students are trained is a problem before: one of ImageNet-C's
    75 folders missing, a class folder the model does not have; a part-unpacked ImageNet-C folder stops its
    evaluation before any image is scored."""
    from repro.cli import main

    root = tmp_path / "imagenet"
    shutil.copytree(imagenet.root, root)
    fake_released_sets(root, data)
    shutil.rmtree(root / "imagenet-c" / "jpeg_compression" / "5")
    (root / "imagenet-a" / "n99999999").mkdir()
    status = main(["check", "table7", "--profile", "paper", "--set", f"data.root={root}", "--runs", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2
    assert f"problem: imagenet_c: no folder {root / 'imagenet-c' / 'jpeg_compression' / '5'} (1 of the 75" in err
    assert f"problem: imagenet_a: {root / 'imagenet-a'}: class folders" in err and "neither the model's" in err
    shutil.copytree(root / "imagenet-c" / "fog" / "1", root / "imagenet-c" / "jpeg_compression" / "5")
    next((root / "imagenet-c" / "fog" / "2").rglob("*.JPEG")).unlink()
    cfg = with_changes(profile_config("paper"), {"data.root": str(root)})
    with pytest.raises(ValueError, match="imagenet-c/fog/2 holds 1 images, other folders 2: unpack its tar again"):
        build_evaluator(robustness_evaluations(cfg)[1]).evaluate(create_model(TINY_MODEL, NUM_CLASSES), data, VIEW,
                                                                 Resources(runs_root=tmp_path))


def test_imagenet_c_is_scored_whole_as_released_and_the_worlds_is_cut_to_the_eval_view(imagenet, data, tmp_path):
    """The release's images are the val images' centre crops at the eval size, scored without a second crop; the
    world's analogue is cut to the students' eval view the same way before it is corrupted."""
    from repro.world.robustness import write_imagenet_c

    for profile, changes in (("paper", {"data.root": str(tmp_path)}), ("proxy", {})):
        cfg = with_changes(profile_config(profile), changes)
        corrupted = robustness_evaluations(cfg)[1]
        assert corrupted["type"] == "imagenet_c" and corrupted["crop_pct"] == 1.0, profile
        if profile == "proxy":
            body = corrupted["source"]["spec"]  # the world's analogue: the spec of its evalset run
            assert (body["size"], body["crop_pct"]) == (cfg["train"]["eval_size"], cfg["train"]["eval_crop_pct"])
    relpaths, labels = data.val.relpaths[:2], data.val.labels[:2]
    assert write_imagenet_c(imagenet.root, relpaths, labels, tmp_path / "c", ["fog"], [1], seed=0, size=40,
                            crop_pct=0.875, progress=False) == 2
    written = sorted((tmp_path / "c" / "fog" / "1").rglob("*.JPEG"))
    assert len(written) == 2 and all(Image.open(path).size == (40, 40) for path in written)
    with pytest.raises(ValueError, match="at least 32 x 32 pixels, not 24 x 24"):
        write_imagenet_c(imagenet.root, relpaths, labels, tmp_path / "d", ["fog"], [1], seed=0, size=24, crop_pct=1.0,
                         progress=False)


def test_a_world_built_before_the_font_was_installed_is_not_scored_as_empty(tmp_path, monkeypatch):
    """The world's rendition set is written only where Noto Color Emoji is installed; a world built before it was
    stays without rendition/ under the same hash. Without the font the column is empty (a warning says why); with
    it installed since, the evaluation stops, naming how to rebuild, instead of caching an empty result."""
    import json
    from types import SimpleNamespace

    import repro.world.glyphs as glyphs

    (tmp_path / "stats.json").write_text(json.dumps(
        {"rendition": {"written": False, "reason": "fonts-noto-color-emoji not installed"}}))
    world = SimpleNamespace(root=tmp_path)
    rendition = build_evaluator({"type": "rendition"})
    monkeypatch.setattr(glyphs, "noto_font_path", lambda: None)
    assert rendition.evaluate(None, world, VIEW, Resources(runs_root=tmp_path)) == {"rendition_images": 0}
    monkeypatch.setattr(glyphs, "noto_font_path", lambda: Path("/usr/share/fonts/NotoColorEmoji.ttf"))
    with pytest.raises(FileNotFoundError, match="built before Noto Color Emoji was installed"):
        rendition.evaluate(None, world, VIEW, Resources(runs_root=tmp_path))


def test_table7_claims_no_gain_where_the_papers_own_numbers_show_none():
    from robustness.table7 import EXPERIMENT

    texts = {claim.text for claim in EXPERIMENT.claims}
    assert "relabel_cutmix > relabel on bcg_top1" not in texts  # the slides: 34.1 after ReLabel's 34.6
    assert {"relabel > vanilla on bcg_top1", "relabel_cutmix > relabel on fgsm_top1",
            "relabel_cutmix below relabel on imagenet_c_mce"} <= texts  # mCE, unreported, follows ImageNet-C's top-1


def test_at_paper_scale_table7s_unpinned_numbers_are_shown_beside_the_paper_not_judged():
    """No FGSM epsilon is stated and the ImageNet-C numbers fit no one protocol: a difference from them says
    nothing, so it is neither a pass nor a failure; ImageNet-A's number is judged within the tolerance."""
    import pandas as pd

    from repro.claims import FAILS, NOT_SHOWN
    from repro.experiment import discover, verdicts_for

    measured = pd.DataFrame([("resnet50", "vanilla", seed, metric, value) for seed in (0, 1)
                             for metric, value in (("fgsm_top1", 10.0), ("imagenet_c_top1", 39.0),
                                                   ("imagenet_a_top1", 1.0))],
                            columns=["model", "setting", "seed", "metric", "value"])
    absolute = {v.claim.split(" within")[0].split(" beside")[0]: v
                for v in verdicts_for(discover()["table7"], measured, "paper") if v.claim.startswith("resnet50 ")}
    for metric in ("fgsm_top1", "imagenet_c_top1"):
        verdict = absolute[f"resnet50 vanilla {metric}"]
        assert (verdict.verdict, verdict.checked) == (NOT_SHOWN, False) and "protocol" in verdict.detail
    assert (absolute["resnet50 vanilla imagenet_a_top1"].verdict, absolute["resnet50 vanilla imagenet_a_top1"]
            .checked) == (FAILS, True)


def test_the_preflight_check_finds_a_world_built_before_the_font_before_any_run(tmp_path, monkeypatch):
    """`make paper` stopped at Table 7 after an hour of the tables before it, on a cached world built before the
    font was installed; the pre-flight check of the plan finds it first."""
    import json

    import repro.world.glyphs as glyphs
    from repro.experiment import Context, planned_specs
    from repro.plan import with_inputs
    from repro.preflight import PROBLEM, preflight
    from robustness.table7 import EXPERIMENT

    ctx = Context(profile="smoke", config=profile_config("smoke"), seeds=[0], runs_root=tmp_path, results_root=tmp_path)
    specs = planned_specs(EXPERIMENT, ctx)
    world = next(spec for spec in with_inputs(specs) if spec.kind == "world")
    (tmp_path / "world" / world.hash).mkdir(parents=True)
    (tmp_path / "world" / world.hash / "stats.json").write_text(json.dumps(
        {"rendition": {"written": False, "reason": "fonts-noto-color-emoji not installed"}}))
    monkeypatch.setattr(glyphs, "noto_font_path", lambda: Path("/usr/share/fonts/NotoColorEmoji.ttf"))
    problems = [finding.message for finding in preflight(specs, runs_root=tmp_path) if finding.level == PROBLEM]
    assert problems == [f"the world at {tmp_path / 'world' / world.hash} was built before Noto Color Emoji was "
                        "installed, so it has no rendition/: move that folder away and rerun to rebuild it with the "
                        "set (its other files come out byte-identical, so every cached run stays valid)"]
    monkeypatch.setattr(glyphs, "noto_font_path", lambda: None)  # still without the font: an empty column, warned
    assert not [finding for finding in preflight(specs, runs_root=tmp_path) if finding.level == PROBLEM]
