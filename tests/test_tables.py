"""The ImageNet-classification tables (2, 3, 4, 5, 6, A1): shared runs, the paper profile on an ImageNet-layout
fixture, and every module end to end at the smoke profile."""
import pandas as pd
import pytest
import torch

from repro.config import architecture_changes, profile_config, with_changes
from repro.experiment import Context, discover, run_experiment
from repro.models import create_model, save_model
from repro.pipeline import annotator_spec, student_spec, train_student
from tests.fixtures import NUM_CLASSES, TINY_MODEL, build_imagenet

TABLES = ["table2", "table3", "table4", "table5", "table6", "tableA1"]


def _run_configs(name, cfg):
    ctx = Context(profile=cfg["profile"], config=cfg, seeds=[0], runs_root="unused", results_root="unused")
    return {(model, setting): run_cfg for model, setting, _, run_cfg in discover()[name].run_configs(ctx)}


@pytest.mark.parametrize("profile", ["proxy", "paper"])
def test_runs_shared_between_tables_are_one_run(profile):
    cfg = profile_config(profile)
    key = {name: {k: student_spec(c) for k, c in _run_configs(name, cfg).items()} for name in TABLES}
    relabel = key["table3"][("resnet50", "relabel")]
    assert key["table2"][("resnet50", "relabel_localized_multi")] == relabel
    assert key["table4"][("resnet50", "relabel")] == relabel
    assert key["table5"][("resnet50", "relabel")] == relabel
    assert key["table6"][("resnet50", "relabel_fp32_top5")] == relabel
    assert key["tableA1"] == key["table3"]
    original = key["table3"][("resnet50", "original")]
    assert key["table2"][("resnet50", "original")] == key["table5"][("resnet50", "vanilla")] == original
    # one annotator serves every student, whatever its architecture, recipe or supervision
    if profile == "proxy":
        annotators = {annotator_spec(c) for name in TABLES for c in _run_configs(name, cfg).values()}
        assert annotators == {annotator_spec(cfg)}
    # and a different supervision, label-map setting or architecture is a different run
    assert len(set(key["table6"].values())) == len(key["table6"])
    assert key["table4"][("resnet18", "relabel")] != relabel


def _paper_profile_on_a_fixture(tmp_path, **changes) -> dict:
    """The paper profile on a tiny ImageNet-layout installation, with a seeded tiny annotator checkpoint."""
    imagenet = build_imagenet(tmp_path / "imagenet", train_per_class=8)
    checkpoint = tmp_path / "annotator.pt"
    torch.manual_seed(0)
    save_model(create_model(TINY_MODEL, NUM_CLASSES), TINY_MODEL, NUM_CLASSES, checkpoint)
    return with_changes(profile_config("paper"), {
        "data.root": str(imagenet.root), "data.v2_root": str(imagenet.root / "v2"), "annotator.model": TINY_MODEL,
        "annotator.pretrained": False, "annotator.checkpoint": str(checkpoint), "labelmap.input_size": 32,
        "labelmap.output_stride": 8, "models.resnet50": TINY_MODEL, "train.model": TINY_MODEL, "train.epochs": 1,
        "train.batch_size": 4, "train.warmup_epochs": 0, "train.crop_size": 32, "train.eval_size": 32,
        "resources.workers": 0, "train.amp": False, "resources.batch_size_eval": 16, **changes})


def test_table3_and_tableA1_at_paper_profile_on_an_imagenet_layout(tmp_path):
    cfg = _paper_profile_on_a_fixture(tmp_path)
    ctx = Context(profile="paper", config=cfg, seeds=[0], runs_root=tmp_path / "runs",
                  results_root=tmp_path / "results")
    outcome = run_experiment(discover()["table3"], ctx)
    table = pd.read_csv(outcome["paths"]["table"])
    assert list(table.setting) == ["original", "label_smoothing_0.1", "label_cleaning", "relabel"]
    for metric in ("imagenet_top1", "imagenetv2_top_images_top1", "real_top1", "shankar_top1"):
        assert table[f"{metric}_mean"].between(0, 100).all()
        assert table[f"{metric}_reported"].notna().all()
    assert outcome["paths"]["png"].stat().st_size > 10_000
    # at the paper profile the absolute numbers are checked too (a one-step tiny model is far from them)
    assert any(v.claim.startswith("resnet50 relabel imagenet_top1 within") and v.verdict == "fails"
               for v in outcome["verdicts"])
    trained = set((tmp_path / "runs" / "train").iterdir())
    outcome = run_experiment(discover()["tableA1"], ctx)
    assert set((tmp_path / "runs" / "train").iterdir()) == trained  # Table A1 reuses Table 3's runs
    assert pd.read_csv(outcome["paths"]["table"])["imagenetv2_matched_frequency_top1_mean"].notna().all()


@pytest.mark.slow
def test_every_table_at_smoke_writes_csv_and_png(tmp_path):
    ctx = Context(profile="smoke", config=profile_config("smoke"), seeds=[0], runs_root=tmp_path / "runs",
                  results_root=tmp_path / "results")
    for name in TABLES:
        outcome = run_experiment(discover()[name], ctx)
        table = pd.read_csv(outcome["paths"]["table"])
        assert len(table) == len(discover()[name].runs(ctx.config))
        assert outcome["paths"]["png"].stat().st_size > 10_000
        assert all(not v.checked for v in outcome["verdicts"])


def test_extra_data_grows_the_training_set_by_a_balanced_relabelled_subsample(tmp_path):
    # the fixture's extra/ pool: 2 images of each class; 1 per class is kept, by the annotator's top-1
    cfg = _paper_profile_on_a_fixture(tmp_path, **{"supervision.mode": "relabel", "extra_data.enabled": True,
                                                   "extra_data.images": NUM_CLASSES})
    runs = tmp_path / "runs"
    metrics = train_student(cfg, runs)
    assert metrics["extra_pool_images"] == 2 * NUM_CLASSES
    assert metrics["extra_images_per_class_max"] <= 1
    assert metrics["train_images"] == 8 * NUM_CLASSES + metrics["extra_images"] > 8 * NUM_CLASSES
    assert student_spec(cfg) != student_spec(with_changes(cfg, {"extra_data.enabled": False}))
    assert student_spec(cfg) != student_spec(with_changes(cfg, {"extra_data.images": 2 * NUM_CLASSES}))
    with pytest.raises(ValueError, match="extra_data needs supervision.mode 'relabel'"):
        train_student(with_changes(cfg, {"supervision.mode": "original"}), runs)


@pytest.mark.parametrize("profile", ["proxy", "paper"])
def test_an_architecture_trains_under_its_familys_recipe_vanilla_and_relabel_alike(profile):
    cfg = profile_config(profile)
    runs = _run_configs("table4", cfg)
    for setting in ("vanilla", "relabel"):
        efficientnet = runs[("efficientnet_b0", setting)]["train"]
        assert efficientnet["model"] == cfg["models"]["efficientnet_b0"]
        assert (efficientnet["opt"], efficientnet["lr"]) == ("adamp", cfg["recipes"]["efficientnet_b0"]["lr"])
        resnet = runs[("resnet18", setting)]["train"]
        assert (resnet["opt"], resnet["lr"]) == (cfg["train"]["opt"], cfg["train"]["lr"])
    with pytest.raises(ValueError, match="unknown architecture 'vgg16'"):
        architecture_changes(cfg, "vgg16")


def test_narrow_efficientnet_blocks_start_as_the_identity_with_zero_init_last():
    for zero_init_last in (False, True):
        torch.manual_seed(0)
        model = create_model({"name": "efficientnet_b0_narrow", "kwargs": {"zero_init_last": zero_init_last}}, 5)
        skips = [block for block in model.blocks.modules() if getattr(block, "has_skip", False)]
        assert len(skips) >= 5
        for block in skips:
            channels = next(m for m in block.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
            x = torch.randn(2, channels, 8, 8)
            assert torch.equal(block.eval()(x), x) == zero_init_last
