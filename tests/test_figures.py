"""The figure modules at the smoke profile, and the library pieces they rely on: the LOC_val_solution reader,
IoU summaries, label maps of the val split, crops' pooled confidence, heatmap peaks, storage accounting and KD
teachers named by their run. The smoke runs share one runs directory (the world and annotator are built once)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from repro.figures.convergence import EXPERIMENT as CONVERGENCE
from repro.figures.costs import regime as costs_regime
from repro.figures.figure6 import kd_epochs_cost_more
from repro import results
from repro.boxes import ValBoxes, boxes_file, imagenet_val_boxes, iou_bins, iou_cdf
from repro.claims import FAILS, HOLDS, evaluate_claims
from repro.config import profile_config, with_changes
from repro.data.folders import image_folder
from repro.data.localisation import read_loc_solution
from repro.costs import GIB, flops_regime, forward_flops, imagenet_storage, official_bytes_per_image, regime_table
from repro.experiment import Context, discover, run_experiment
from repro.figures.figureA2 import peaks_on_different_objects
from repro.labelmaps.analysis import (boxes_containing, classes_at, crop_confidences, epoch_crop_boxes,
                                      peaks_in_different_objects, peaks_on_own_objects, top2_peaks)
from repro.labelmaps.packed import write_packed
from repro.labelmaps.quantize import bytes_per_image
from repro.labelmaps.reader import open_labelmaps
from repro.models import create_model, save_model
from repro.pipeline import (annotator_spec, annotator_top1, data_root, generated_labelmaps_spec, kd_changes,
                            labelmaps_dir, student_spec)
from repro.sweeps import annotator_sweep, kd_teachers
from repro.world.stats import crop_iou_values
from tests.fixtures import HEIGHT, NUM_CLASSES, TINY_MODEL, WIDTH, tiny_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def results_root(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


def run_smoke(name: str, runs, results_root) -> dict:
    ctx = Context(profile="smoke", config=profile_config("smoke"), seeds=[0], runs_root=runs,
                  results_root=results_root)
    return run_experiment(discover()[name], ctx)


def assert_written(outcome: dict, *extra: str) -> None:
    png = outcome["paths"]["png"]
    assert png.stat().st_size > 10_000  # a rendered figure, not an empty canvas
    for name in extra:
        assert (png.parent / name).stat().st_size > 0
    assert all(not v.checked for v in outcome["verdicts"])  # smoke claims never gate


# --- the LOC_val_solution reader --------------------------------------------------------------------------------

def _write_solution(path, rows):
    path.write_text("ImageId,PredictionString\n" + "".join(f"{image},{boxes}\n" for image, boxes in rows))
    return path


def test_read_loc_solution_groups_boxes_by_five_fields(tmp_path):
    path = _write_solution(tmp_path / "LOC_val_solution.csv", [
        ("ILSVRC2012_val_00000002", "n01 10 20 30 40 n01 0 0 5 6 "),
        ("ILSVRC2012_val_00000001", "n02 1 2 3 4")])
    boxes = read_loc_solution(path)
    assert boxes["ILSVRC2012_val_00000002"] == [("n01", [10.0, 20.0, 30.0, 40.0]), ("n01", [0.0, 0.0, 5.0, 6.0])]
    assert boxes["ILSVRC2012_val_00000001"] == [("n02", [1.0, 2.0, 3.0, 4.0])]
    _write_solution(tmp_path / "bad.csv", [("ILSVRC2012_val_00000001", "n02 1 2 3")])
    with pytest.raises(ValueError, match="groups of 5"):
        read_loc_solution(tmp_path / "bad.csv")


def test_imagenet_val_boxes_keep_the_images_own_class_and_read_sizes_from_the_files(imagenet, tmp_path):
    rows = []
    for number, label in enumerate(imagenet.val_labels, start=1):
        own, other = imagenet.wnids[label], imagenet.wnids[(label + 1) % NUM_CLASSES]
        rows.append((f"ILSVRC2012_val_{number:08d}", f"{other} 0 0 1 1 {own} {number} 2 30 31 {own} 1 1 9 9"))
    images = image_folder(imagenet.root, "val", imagenet.wnids)
    val = imagenet_val_boxes(images, imagenet.wnids, _write_solution(tmp_path / "solution.csv", rows[::-1]))
    assert len(val) == len(imagenet.val_labels)
    assert [int(p.rsplit("_", 1)[1][:8]) for p in val.relpaths] == list(range(1, len(val) + 1))  # val order
    assert set(val.sizes) == {(WIDTH, HEIGHT)}
    assert val.boxes[2].tolist() == [[3.0, 2.0, 30.0, 31.0], [1.0, 1.0, 9.0, 9.0]]
    with pytest.raises(KeyError, match="no boxes"):
        imagenet_val_boxes(images, imagenet.wnids, _write_solution(tmp_path / "short.csv", rows[1:]))


def test_the_boxes_file_defaults_to_the_one_at_the_data_root(tmp_path):
    data = {"source": "imagenet", "root": str(tmp_path), "boxes_csv": None}
    with pytest.raises(FileNotFoundError, match=f"no val boxes file {tmp_path / 'LOC_val_solution.csv'}: .*set "
                                                "data.boxes_csv"):
        boxes_file(data)
    (tmp_path / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n")
    assert boxes_file(data) == tmp_path / "LOC_val_solution.csv"
    elsewhere = tmp_path / "boxes.csv"
    elsewhere.write_text("ImageId,PredictionString\n")
    assert boxes_file({**data, "boxes_csv": str(elsewhere)}) == elsewhere
    assert boxes_file({"source": "world", "root": None}) is None


def test_figure2_reads_imagenet_boxes_at_paper_scale(imagenet, tmp_path):
    rows = [(f"ILSVRC2012_val_{n:08d}", f"{imagenet.wnids[label]} 5 4 25 20")
            for n, label in enumerate(imagenet.val_labels, start=1)]
    cfg = with_changes(profile_config("paper"), {"data.root": str(imagenet.root),
                                                 "data.boxes_csv": str(_write_solution(tmp_path / "s.csv", rows))})
    ctx = Context(profile="paper", config=cfg, seeds=[0], runs_root=tmp_path / "runs", results_root=tmp_path)
    collected = discover()["figure2"].collect(ctx)
    assert set(collected.measured.metric) == {"fraction_crops_iou_zero", "fraction_crops_iou_gt_0.5"}
    curve = collected.tables["curve"]
    assert curve.source.iloc[0].startswith("ImageNet val") and curve.crops.iloc[0] == 100 * len(rows)
    assert curve.cdf.is_monotonic_increasing and curve.cdf.iloc[-1] == 1.0


# --- crop and box summaries --------------------------------------------------------------------------------------

def test_iou_cdf_and_bins():
    ious = np.array([0.0, 0.0, 0.05, 0.1, 0.55, 1.0])
    assert iou_cdf(ious, np.array([0.0, 0.1, 0.5, 1.0])).tolist() == [2 / 6, 4 / 6, 4 / 6, 1.0]
    bins = iou_bins(ious, np.array([0.2, 0.4, 0.5, 0.7, 0.8, 0.9]))
    assert bins.bin.tolist() == ["iou_zero", "iou_0.0-0.1", "iou_0.5-0.6", "iou_0.9-1.0"]
    assert bins.crops.tolist() == [2, 2, 1, 1]
    assert np.allclose(bins["mean"], [0.3, 0.6, 0.8, 0.9])


def test_peaks_in_different_objects():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20]], dtype=float)
    assert boxes_containing((7, 7), boxes) == {0, 1}
    assert peaks_in_different_objects((2, 2), (15, 15), boxes)
    assert peaks_in_different_objects((2, 2), (7, 7), boxes)      # the second peak is also in the other box
    assert not peaks_in_different_objects((6, 6), (7, 7), boxes)  # both in the overlap: not told apart
    assert not peaks_in_different_objects((2, 2), (30, 30), boxes)  # the second on no object


def test_peaks_on_own_objects_read_the_visible_masks_and_skip_classes_absent_from_the_image():
    # a large object of class 0 whose box holds a small object of class 5 drawn over it; the small one's top row is
    # hidden (its box still spans it)
    masks = np.zeros((2, 20, 20), dtype=bool)
    masks[1, 11:14, 10:14] = True
    masks[0, 0:16, 0:16] = ~masks[1, 0:16, 0:16]
    classes = np.array([0, 5])
    boxes = np.array([[0, 0, 16, 16], [10, 10, 14, 14]], dtype=float)
    assert classes_at((12, 12), classes, masks) == {5} and classes_at((2, 2), classes, masks) == {0}
    assert classes_at((18, 18), classes, masks) == frozenset()
    assert peaks_on_own_objects((0, (2, 2)), (5, (12.5, 12.5)), classes, masks)
    # pixel (x 12, y 10) lies in both boxes but shows the large object: the box test calls the two peaks different
    # objects, the masks put both on class 0's object
    assert peaks_in_different_objects((2, 2), (12, 10.5), boxes)
    assert not peaks_on_own_objects((0, (2, 2)), (5, (12, 10.5)), classes, masks)
    assert not peaks_on_own_objects((0, (12, 12)), (5, (12, 12)), classes, masks)  # one object, not each its own
    assert peaks_on_own_objects((0, (2, 2)), (7, (12, 12)), classes, masks) is None  # class 7 is not in the image


def test_figureA2_claim_is_measured_where_the_top2_classes_are_objects_of_the_image():
    def measured(**values):
        return results.measurements([{"model": "none", "setting": "multi_object_val", "seed": 0, "metric": m,
                                      "value": v} for m, v in values.items()])

    verdict, detail = peaks_on_different_objects(measured(
        images=800, fraction_peaks_in_different_objects=0.15, fraction_top2_classes_present=0.05,
        images_top2_classes_present=40, fraction_peaks_on_own_objects=0.75))
    assert verdict == HOLDS and "75.0% of the 40" in detail and "5.0% of 800" in detail
    verdict, _ = peaks_on_different_objects(measured(
        images=800, fraction_peaks_in_different_objects=0.9, fraction_top2_classes_present=0.05,
        images_top2_classes_present=40, fraction_peaks_on_own_objects=0.3))
    assert verdict == FAILS  # the box measure over every image no longer decides
    verdict, _ = peaks_on_different_objects(measured(images=800, fraction_top2_classes_present=0.0,
                                                     images_top2_classes_present=0))
    assert verdict == "no data"


def test_top2_peaks_locate_each_class_where_its_logits_are():
    values = torch.zeros(2, 4, 4)
    ids = torch.zeros(2, 4, 4, dtype=torch.long)
    values[0], ids[0] = 1.0, 3
    values[0, 0, 0], values[0, 3, 3] = 9.0, 5.0  # class 3 peaks top-left
    ids[0, 3, 3] = 1                               # class 1 holds the bottom-right cell
    values[1], ids[1] = 0.1, 2
    (c1, _, peak1), (c2, _, peak2) = top2_peaks(values, ids, num_classes=4, width=40, height=20)
    assert (c1, peak1) == (3, (5.0, 2.5))
    assert (c2, peak2) == (1, (35.0, 17.5))


def test_crop_confidences_draw_the_crops_of_figure2(tmp_path):
    relpaths = [f"val/n0/ILSVRC2012_val_{i:08d}.JPEG" for i in (1, 2, 3)]
    values = torch.rand(3, 2, 5, 5) * 4
    ids = torch.stack([torch.zeros(5, 5), torch.ones(5, 5)]).long().expand(3, 2, 5, 5)
    maps = open_labelmaps(write_packed(tmp_path / "store", relpaths[::-1], values, ids, num_classes=3))
    val = ValBoxes(relpaths, [np.array([[0.0, 0.0, 30.0, 20.0]])] * 3, [(60, 40), (50, 50), (40, 60)], "test")
    ious, confidences = crop_confidences(maps, val, crops_per_image=7, seed=5)
    assert np.array_equal(ious, crop_iou_values(val.boxes, val.sizes, 7, 5))
    assert ious.shape == confidences.shape == (21,) and ((confidences > 1 / 3) & (confidences <= 1)).all()


def test_epoch_crop_boxes_are_the_trainers_first_draw(imagenet):
    from repro.crops import crop_rng
    from repro.data.folders import image_folder
    from repro.data.transforms import TrainCrop, read_image

    train = image_folder(imagenet.root, "train", imagenet.wnids)
    boxes, sizes = epoch_crop_boxes(train, [3, 7], seed=2, epoch=1)
    assert sizes == [(WIDTH, HEIGHT)] * 2
    _, unit = TrainCrop(16)(read_image(train.path(7)), crop_rng(2, 1, 7))
    assert np.allclose(boxes[1] / [WIDTH, HEIGHT, WIDTH, HEIGHT], unit.numpy())


def test_imagenet_storage_matches_the_papers_arithmetic():
    table = imagenet_storage(images=1_280_000).set_index(["layout", "topk", "dtype"])
    # Section 3.3: 1.28e6 images x 15 x 15 x 1000 x 4 bytes
    assert table.loc[("full", 1000, "fp32"), "bytes_per_image"] == 15 * 15 * 1000 * 4
    assert table.loc[("official", 5, "fp32"), "bytes_per_image"] == official_bytes_per_image(5, (15, 15)) == 9000
    assert table.loc[("packed", 5, "fp16"), "bytes_per_image"] == bytes_per_image(5, (15, 15), "fp16")
    assert np.isclose(table.loc[("official", 5, "fp32"), "gib"], 1_280_000 * 9000 / GIB)


# --- pipeline additions -----------------------------------------------------------------------------------------

def test_forward_flops_count_the_models_shapes():
    resnet50 = {"name": "resnet50", "kwargs": {}}
    assert forward_flops(resnet50, 224, 1000) == pytest.approx(8.18e9, rel=0.01)  # 4.09 G multiply-adds
    assert forward_flops(resnet50, 448, 1000) == pytest.approx(4 * forward_flops(resnet50, 224, 1000), rel=0.01)
    # label maps at stride 8 dilate the last two stages: their convolutions run on 4x and 16x the positions
    assert forward_flops(resnet50, 224, 1000, output_stride=8) > 3 * forward_flops(resnet50, 224, 1000)


def test_the_papers_cost_regime_from_its_models():
    paper = flops_regime(profile_config("paper"), 1000)
    assert paper["epochs"] == 300 and paper["labelling_size"] == 475 and paper["student_crop"] == 224
    assert [t["size"] for t in paper["teachers"].values()] == [240, 300, 456, 600]
    # EfficientNet-L2 at 475 px labels an image for about 14 ResNet-50 steps: 4.6% of 300 epochs
    assert paper["annotator_forward"] / (300 * paper["student_step"]) == pytest.approx(0.046, abs=0.002)
    # B7 at 600 px: about 3 student steps per crop, so a KD epoch about 4x (the paper: "more than four times")
    assert paper["teachers"]["efficientnet_b7"]["forward"] / paper["student_step"] == pytest.approx(3.08, abs=0.05)


def _regime(epochs, step, annotator, teachers):
    return {"epochs": epochs, "student": "s", "student_crop": 10, "student_step": step, "annotator": "a",
            "labelling_size": 20, "annotator_forward": annotator,
            "teachers": {name: {"model": name, "size": 10, "forward": f} for name, f in teachers.items()}}


def test_regime_table_pairs_the_teachers_largest_first_and_finds_their_break_even_epochs():
    paper = _regime(300, 3.0, 42.0, {"b1": 0.3, "b3": 0.6, "b5": 3.0, "b7": 6.0})
    here = _regime(4, 1.0, 4.0, {"small": 0.5, "large": 2.0})
    table = regime_table(paper, here, {"generation_share": 0.03, "generation_relabel_epochs": 9.0,
                                       "kd_over_relabel": {"b7": 4.0}},
                         {"generation_share": 0.4, "generation_relabel_epochs": 2.0,
                          "kd_over_relabel": {"small": 1.5, "large": 0.9}}).set_index(["quantity", "basis"])

    def row(quantity, basis):
        return table.loc[(quantity, basis), ["paper", "reproduced"]].tolist()

    assert row("generation_share_of_training", "FLOPs") == pytest.approx([42 / (300 * 3), 4 / 4])
    assert row("annotator_forward_per_student_step", "FLOPs") == pytest.approx([14.0, 4.0])
    assert row("kd_teacher_largest_forward_per_student_step", "FLOPs") == pytest.approx([2.0, 2.0])  # b7 | large
    assert row("kd_teacher_2nd_largest_forward_per_student_step", "FLOPs") == pytest.approx([1.0, 0.5])  # b5 | small
    assert row("kd_teacher_largest_break_even_epochs", "FLOPs") == pytest.approx([7.0, 2.0])
    # wall: 9 ReLabel epochs of generation over b7's 3 extra; a KD student faster than ReLabel never breaks even
    paper_wall, here_wall = row("kd_teacher_largest_break_even_epochs", "wall time")
    assert paper_wall == pytest.approx(3.0) and np.isnan(here_wall)
    assert row("kd_teacher_2nd_largest_break_even_epochs", "wall time")[1] == pytest.approx(4.0)  # 2 / 0.5
    assert np.isnan(row("kd_teacher_4th_largest_forward_per_student_step", "FLOPs")[1])  # here has two teachers
    assert table.loc[("kd_teacher_4th_largest_forward_per_student_step", "FLOPs"), "paper_setting"] == "b1 @10"


def test_label_maps_of_another_split_are_another_run_differing_in_the_split_only():
    cfg = profile_config("smoke")
    train, val = generated_labelmaps_spec(cfg, "train"), generated_labelmaps_spec(cfg, "val")
    assert train.hash != val.hash and {**train.body, "split": "val"} == val.body


def test_a_kd_teacher_enters_the_students_spec_by_its_spec_or_its_checkpoints_content(tmp_path):
    cfg = profile_config("smoke")
    trained = student_spec(with_changes(cfg, kd_changes(cfg)))
    assert trained["objective"]["kd_teacher"] == annotator_spec(cfg).as_json()
    assert str(tmp_path) not in json.dumps(trained.as_json())  # no path of this machine's run cache
    checkpoint = tmp_path / "teacher.pt"
    checkpoint.write_bytes(b"weights")
    external = with_changes(cfg, {"annotator.source": "timm", "annotator.checkpoint": str(checkpoint)})
    before = student_spec(with_changes(cfg, kd_changes(external)))
    checkpoint.write_bytes(b"other weights")  # replaced in place
    assert student_spec(with_changes(cfg, kd_changes(external))).hash != before.hash


def test_annotator_top1_of_a_pretrained_annotator_is_evaluated_once(imagenet, tmp_path):
    checkpoint = tmp_path / "teacher.pt"
    torch.manual_seed(0)
    save_model(create_model(TINY_MODEL, NUM_CLASSES), TINY_MODEL, NUM_CLASSES, checkpoint)
    cfg = tiny_config(**{"data.source": "imagenet", "data.root": str(imagenet.root), "annotator.source": "timm",
                         "annotator.model": TINY_MODEL, "annotator.checkpoint": str(checkpoint)})
    top1 = annotator_top1(cfg, tmp_path / "runs")
    assert 0.0 <= top1 <= 100.0
    assert len(list((tmp_path / "runs" / "eval").iterdir())) == 1
    assert annotator_top1(cfg, tmp_path / "runs") == top1


def test_sweeps_at_each_profile():
    smoke, proxy, paper = (profile_config(p) for p in ("smoke", "proxy", "paper"))
    assert list(annotator_sweep(proxy)) == ["resnet18w24_1ep", "resnet18w24_2ep", "resnet18w16_3ep",
                                            "resnet18w24_3ep"]
    assert with_changes(proxy, annotator_sweep(proxy)["resnet18w24_3ep"]) == proxy  # the profile's annotator
    assert list(annotator_sweep(smoke)) == ["resnet18w24_1ep", "resnet18w16_1ep"]  # one epoch: equal runs merge
    assert list(kd_teachers(proxy)) == ["resnet18w16", "resnet18w24", "resnet50w24"]
    assert list(annotator_sweep(paper))[-1] == "efficientnet_l2"
    assert with_changes(paper, annotator_sweep(paper)["efficientnet_l2"]) == paper
    assert with_changes(paper, kd_teachers(paper)["efficientnet_b7"])["labelmap"]["input_size"] == 600


# --- every figure at the smoke profile ----------------------------------------------------------------------------

def test_figure2_smoke_reproduces_the_worlds_calibration(runs, results_root):
    outcome = run_smoke("figure2", runs, results_root)
    assert_written(outcome, "figure2_curve.csv")
    stats = json.loads((data_root(profile_config("smoke"), runs) / "stats.json").read_text())["calibration"]
    measured = pd.read_csv(outcome["paths"]["seeds"]).set_index("metric")["value"]
    # seed 0 is the world's own seed: the same crops and the same code as its stats.json
    # (stats.json keeps four decimals)
    assert measured["fraction_crops_iou_zero"] == pytest.approx(stats["iou_zero"]["world"], abs=5e-5)
    assert measured["fraction_crops_iou_gt_0.5"] == pytest.approx(stats["iou_gt_0.5"]["world"], abs=5e-5)
    # a second invocation keeps the first in the meta file's history
    run_smoke("figure2", runs, results_root)
    invocations = json.loads((results_root / "smoke" / "figure2_meta.json").read_text())["invocations"]
    assert len(invocations) == 2 and invocations[0]["command"] == "python -m repro figure2 --profile smoke --seeds 1"


def test_figure5_smoke_pools_at_least_100k_crops_from_val_label_maps(runs, results_root):
    outcome = run_smoke("figure5", runs, results_root)
    assert_written(outcome, "figure5_bins.csv")
    bins = pd.read_csv(results_root / "smoke" / "figure5_bins.csv")
    assert bins.crops.sum() >= 100_000 and bins.bin.iloc[0] == "iou_zero"
    cfg = profile_config("smoke")
    val_maps = open_labelmaps(labelmaps_dir(cfg, runs, split="val"))
    train_maps = open_labelmaps(labelmaps_dir(cfg, runs))
    assert all(p.startswith("val/") for p in val_maps.paths)
    assert (val_maps.topk, val_maps.grid, val_maps.dtype) == (train_maps.topk, train_maps.grid, train_maps.dtype)


def test_figureA2_smoke_measures_peaks_on_multi_object_images(runs, results_root):
    outcome = run_smoke("figureA2", runs, results_root)
    assert_written(outcome, "figureA2_peaks.csv", "figureA2_suite_annotator.png", "figureA2_lite0.png")
    peaks = pd.read_csv(results_root / "smoke" / "figureA2_peaks.csv")
    assert len(peaks) > 0 and peaks.classes_present.str.contains(",").all()
    # the own-object verdict exists exactly where both top classes are objects of the image
    assert (peaks.peaks_on_own_objects.notna() == peaks.top2_classes_present).all()
    measured = pd.read_csv(outcome["paths"]["seeds"]).set_index("metric")["value"]
    assert measured["fraction_top2_classes_present"] == pytest.approx(peaks.top2_classes_present.mean())


def test_figureA3_smoke_gallery(runs, results_root):
    outcome = run_smoke("figureA3", runs, results_root)
    assert_written(outcome, "figureA3_gallery.csv")
    gallery = pd.read_csv(results_root / "smoke" / "figureA3_gallery.csv")
    assert len(gallery) > 0 and ((gallery.x2 > gallery.x1) & (gallery.y2 > gallery.y1)).all()


def test_costs_smoke(runs, results_root):
    outcome = run_smoke("costs", runs, results_root)
    assert_written(outcome, "costs_storage.csv", "costs_regime.csv")
    measured = pd.read_csv(outcome["paths"]["seeds"]).set_index(["setting", "metric"])["value"]
    assert measured[("label_map_generation", "share_of_training")] > 0
    regime = pd.read_csv(results_root / "smoke" / "costs_regime.csv").set_index(["quantity", "basis"])
    generation = regime.loc[("generation_share_of_training", "wall time")]
    assert generation.paper == pytest.approx(10 / 328)
    assert generation.reproduced == pytest.approx(measured[("label_map_generation", "share_of_training")], rel=1e-5)  # the CSV keeps 6 digits
    assert regime.loc[("student_epochs", "schedule")].tolist()[:2] == [300, 1]
    assert 0 < measured[("labelpooling", "pool_seconds")] < measured[("labelpooling", "train_step_seconds")]


def test_kd_changes_name_the_teacher_run(runs):
    cfg = profile_config("smoke")
    changes = kd_changes(cfg)
    assert changes["supervision.kd_teacher"] == annotator_spec(cfg).as_json()
    assert changes["supervision.kd_input_size"] == cfg["annotator"]["train"]["crop_size"]
    assert annotator_spec(cfg) in student_spec(with_changes(cfg, changes)).dependencies()


def test_figure4_smoke(runs, results_root):
    outcome = run_smoke("figure4", runs, results_root)
    assert_written(outcome, "figure4_points.csv")
    points = pd.read_csv(results_root / "smoke" / "figure4_points.csv")
    assert points.setting.tolist()[-1] == "original" and points.annotator_top1.iloc[:-1].notna().all()


def test_figure6_smoke(runs, results_root):
    outcome = run_smoke("figure6", runs, results_root)
    assert_written(outcome, "figure6_points.csv")
    points = pd.read_csv(results_root / "smoke" / "figure6_points.csv").set_index("setting")
    kd = points[points.index.str.startswith("kd_")]
    assert len(kd) == 3 and (kd.teacher_seconds > 0).all() and (kd.cost_seconds == kd.train_seconds).all()
    assert points.loc["relabel", "cost_seconds"] > points.loc["relabel", "train_seconds"]
    # with Figure 6's KD students cached, costs' regime table reads their training time against ReLabel's
    ctx = Context(profile="smoke", config=profile_config("smoke"), seeds=[0], runs_root=runs,
                  results_root=results_root)
    regime = costs_regime(ctx).set_index(["quantity", "basis"])["reproduced"]
    for name, rank in (("resnet50w24", "largest"), ("resnet18w16", "3rd_largest")):
        assert regime[(f"kd_teacher_{rank}_kd_epoch_over_relabel_epoch", "wall time")] == pytest.approx(
            kd.train_seconds[f"kd_{name}"] / points.loc["relabel", "train_seconds"])


def test_costs_are_device_seconds_so_eight_gpus_compare_with_one():
    """Under torchrun a student's train_seconds is wall time on every GPU of the job, the label maps' generation
    time on one (rank 0's): the costs and Figure 6 compare them as the paper's GPU-hours, not as wall times (a
    generation share 8x too high on 8 GPUs)."""
    from repro.costs import device_seconds

    assert device_seconds({"train_seconds": 100.0, "world_size": 8}) == 800.0
    assert device_seconds({"train_seconds": 100.0}) == 100.0  # recorded before world_size, or one process
    assert device_seconds({"teacher_seconds": 5.0, "world_size": 2}, "teacher_seconds") == 10.0
    # recorded epoch by epoch: a run of 3 epochs on 8 GPUs resumed for 1 on 4 is costed as it ran, not 4 x 4
    resumed = {"train_seconds": 400.0, "world_size": 4, "device_seconds": {"train_seconds": 3 * 8 * 100 + 4 * 100.0}}
    assert device_seconds(resumed) == 2800.0


def test_figure6_per_epoch_claim_reports_when_kd_overtakes_the_generation_cost():
    def measured(kd_seconds):
        rows = [("relabel", "train_seconds", 100.0), ("relabel", "labelmap_generation_seconds", 60.0),
                ("relabel", "epochs", 4), ("relabel", "imagenet_top1", 30.0),
                ("kd_small", "train_seconds", kd_seconds), ("kd_small", "imagenet_top1", 31.0)]
        return results.measurements([{"model": "resnet50", "setting": s, "seed": 0, "metric": m, "value": v}
                                     for s, m, v in rows])

    verdict, detail = kd_epochs_cost_more(measured(140.0))  # 10 s more per epoch: 60 s repaid by epoch 6
    assert verdict == HOLDS and "1.40x" in detail and "from epoch 6" in detail
    verdict, detail = kd_epochs_cost_more(measured(90.0))
    assert verdict == FAILS and "0.90x" in detail


def test_convergence_smoke_reuses_table3_at_the_recipes_length(runs, results_root):
    ctx = Context(profile="smoke", config=profile_config("smoke"), seeds=[0], runs_root=runs,
                  results_root=results_root)
    table3 = {spec.hash for spec in discover()["table3"].plan(ctx)}
    students = [spec for spec in CONVERGENCE.plan(ctx) if spec.kind == "train"]
    assert len(students) == 3 * 2 and sum(spec.hash in table3 for spec in students) == 3  # the 1-epoch ones
    outcome = run_smoke("convergence", runs, results_root)
    assert_written(outcome, "convergence_gains.csv")
    seeds = pd.read_csv(outcome["paths"]["seeds"]).set_index(["setting", "epochs"])["value"]
    assert sorted(set(seeds.index)) == sorted({(s, e) for s in ("original", "label_smoothing_0.1", "relabel")
                                               for e in (1, 2)})
    gains = pd.read_csv(results_root / "smoke" / "convergence_gains.csv").set_index(["setting", "epochs"])
    for epochs in (1, 2):
        assert gains.loc[("relabel", epochs), "gain"] == pytest.approx(
            seeds[("relabel", epochs)] - seeds[("original", epochs)], abs=1e-6)
    assert gains.paper_gain_300_epochs.loc["relabel"].tolist() == pytest.approx([1.4, 1.4])


def test_convergence_claims_read_the_longest_length_and_the_change_of_the_gain():
    def verdicts(relabel_gain):  # {epochs: ReLabel − original on each of 3 seeds (0.1 apart)}
        rows = [{"model": "resnet50", "setting": setting, "epochs": epochs, "seed": seed, "metric": "imagenet_top1",
                 "value": 30.0 + seed + {"original": 0.0, "label_smoothing_0.1": 0.5,
                                         "relabel": gain + 0.1 * seed}[setting]}
                for epochs, gain in relabel_gain.items() for seed in range(3)
                for setting in ("original", "label_smoothing_0.1", "relabel")]
        measured = results.measurements(rows, keys=CONVERGENCE.key_columns)
        return [v.verdict for v in evaluate_claims(CONVERGENCE.claims, measured)]

    # persists > 0, between 0 and 3 pp, shrinks, above label smoothing
    assert verdicts({4: 5.7, 32: 1.5}) == [HOLDS, HOLDS, HOLDS, HOLDS]
    assert verdicts({4: 5.7, 32: 4.0}) == [HOLDS, FAILS, HOLDS, HOLDS]
    assert verdicts({4: 1.0, 32: -2.0}) == [FAILS, FAILS, HOLDS, FAILS]  # a loss is not the paper's regime
    assert verdicts({4: 1.0, 8: 3.0, 16: 5.0}) == [HOLDS, FAILS, FAILS, HOLDS]
