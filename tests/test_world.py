"""The generated world: determinism, annotations that match the pixels, the on-disk layouts, the run cache, and
(slow) the proxy world's calibration against ImageNet."""
from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from repro.runs import Run
from repro.specs import Spec
from repro.steps import ensure_world
from repro.world import build, build_world
from repro.world.build import NoWorldError
from repro.world.cli import format_stats, register
from repro.world.params import world_params
from repro.world.parts import draw, generate, load_assets, plan_parts, wnid
from repro.world.stats import crop_iou_values, imagenet_targets, multilabel_fraction

TINY = {"n_train": 60, "n_extra": 90, "n_val": 60, "n_v2_per_class": 1, "n_rendition_per_class": 1,
        "downstream_max_classes": 3, "n_downstream_train_per_class": 2, "n_downstream_test_per_class": 1,
        "n_detection_train": 12, "n_detection_val": 6}


def tiny_params(**changes) -> dict:
    return {**world_params("smoke"), **TINY, **changes}


def file_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    root = tmp_path_factory.mktemp("worlds")
    stats = build_world(tiny_params(), root / "a", progress=False)
    build_world(tiny_params(), root / "b", progress=False)
    build_world(tiny_params(seed=1), root / "seed1", progress=False)
    return {"a": root / "a", "b": root / "b", "seed1": root / "seed1", "stats": stats}


def test_same_seed_gives_byte_identical_world(worlds):
    a, b = file_digests(worlds["a"]), file_digests(worlds["b"])
    assert len(a) > 300
    assert a == b


def test_other_seed_gives_other_images(worlds):
    a, other = file_digests(worlds["a"]), file_digests(worlds["seed1"])
    val_images = [name for name in a if name.startswith("val/")]
    assert sum(a[name] != other.get(name) for name in val_images) == len(val_images)


def test_classes_have_readable_names_and_several_exemplars():
    assets = load_assets(world_params("proxy"))
    assert len(assets.classes) >= 50
    assert all(len(c.glyphs) >= 3 for c in assets.classes)
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", c.name) for c in assets.classes)
    assert "animal-mammal-a" in [c.name for c in assets.classes]
    assert len(assets.downstream) == 5 and all(len(cs) >= 3 for cs in assets.downstream.values())
    world_glyphs = {g for c in assets.classes for g in c.glyphs}
    assert not world_glyphs & {g for cs in assets.downstream.values() for c in cs for g in c.glyphs}


def test_imagenet_folders_real_json_and_v2_folders(worlds):
    import torchvision

    root, params = worlds["a"], tiny_params()
    mapping = [line.split(" ", 1) for line in (root / "LOC_synset_mapping.txt").read_text().splitlines()]
    wnids = [w for w, _ in mapping]
    assert wnids == sorted(wnids) == [wnid(i) for i in range(len(wnids))]
    assert all(re.fullmatch(r"n9\d{7}", w) for w in wnids)
    for split in ("train", "extra", "val"):
        folder = torchvision.datasets.ImageFolder(root / split)
        assert folder.classes == wnids
        assert len(folder) == params[f"n_{split}"]
    val_files = sorted(p.name for p in (root / "val").rglob("*.JPEG"))
    assert val_files == [f"ILSVRC2012_val_{k:08d}.JPEG" for k in range(1, params["n_val"] + 1)]
    label_of_file = {p.name: wnids.index(p.parent.name) for p in (root / "val").rglob("*.JPEG")}
    for name in ("real.json", "shankar.json"):
        lists = json.loads((root / name).read_text())
        assert len(lists) == len(val_files)
        for file_name, labels in zip(val_files, lists):
            assert labels == sorted(set(labels)) and label_of_file[file_name] in labels
    for variant in ("matched-frequency", "threshold0.7", "top-images"):
        folders = list((root / "v2" / f"imagenetv2-{variant}-format-val").iterdir())
        assert folders and all(f.name.isdigit() and 0 <= int(f.name) < len(wnids) for f in folders)
        image = Image.open(next(folders[0].glob("*.jpeg")))
        assert image.size == (params["image_size"], params["image_size"])
    for task in params["downstream_tasks"]:
        train, test = root / "downstream" / task / "train", root / "downstream" / task / "test"
        assert sorted(p.name for p in train.iterdir()) == sorted(p.name for p in test.iterdir())
    for name in ("stats.json", "contact_sheet.png", "LICENSES.md", "detection/annotations/instances_val.json"):
        assert (root / name).is_file()
    assert "CC BY-SA 4.0" in (root / "LICENSES.md").read_text()


@pytest.mark.parametrize("annotations", ["annotations/instances_train.json", "annotations/instances_val.json",
                                         "annotations/instances_extra.json",
                                         "detection/annotations/instances_train.json"])
def test_coco_annotations_load_and_masks_lie_in_boxes(worlds, annotations):
    root = worlds["a"]
    coco = COCO(str(root / annotations))
    image_root = root / "detection" if annotations.startswith("detection") else root
    assert coco.getImgIds() and coco.getAnnIds()
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        assert (image_root / info["file_name"]).is_file()
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        if not annotations.startswith("detection"):
            primary = [a for a in anns if a["primary"]]
            assert len(primary) == 1
            assert coco.loadCats(primary[0]["category_id"])[0]["wnid"] == Path(info["file_name"]).parent.name
        for ann in anns:
            mask = coco.annToMask(ann)
            x, y, w, h = (int(v) for v in ann["bbox"])
            assert mask.sum() == ann["area"] > 0
            assert mask[y:y + h, x:x + w].sum() == mask.sum()
            assert list(mask_utils.toBbox(ann["segmentation"])) == ann["bbox"]


def test_masks_match_the_pixels_drawn(worlds):
    """Redraw val images in memory: the file holds that image, and each visible mask covers its object's colours."""
    root, params = worlds["a"], tiny_params()
    assets = load_assets(params)
    val = next(p for p in plan_parts(assets) if p.name == "val")
    coco = COCO(str(root / "annotations" / "instances_val.json"))
    checked = 0
    for index in range(20):
        image, record = generate(assets, val, index)
        pixels = np.asarray(image, dtype=np.float32) / 255
        on_disk = np.asarray(Image.open(root / record["file_name"]).convert("RGB"), dtype=np.float32) / 255
        assert np.abs(on_disk - pixels).mean() < 0.02  # only JPEG's loss
        anns = coco.loadAnns(coco.getAnnIds(imgIds=index + 1))
        assert [a["category_id"] - 1 for a in anns] == [o["class"] for o in record["objects"]]
        _, placed = draw(assets, val, index)
        visible = [p for p in placed if p.mask.any()]
        for obj, ann in zip(visible, anns):
            mask = coco.annToMask(ann).astype(bool)
            assert (mask == obj.mask).all()
            x, y, w, h = (int(v) for v in ann["bbox"])
            crop, crop_mask = on_disk[y:y + h, x:x + w], mask[y:y + h, x:x + w]
            patch = np.zeros_like(pixels)
            _place(patch, np.asarray(obj.patch, dtype=np.float32)[..., :3] / 255, obj.x0, obj.y0)
            drawn = patch[y:y + h, x:x + w][crop_mask]
            assert np.median(np.abs(crop[crop_mask] - drawn)) < 0.1
            checked += 1
    assert checked >= 20


def _place(canvas: np.ndarray, patch: np.ndarray, x0: int, y0: int) -> None:
    """Copy patch onto canvas with its top-left corner at (x0, y0), clipped to the canvas."""
    size = canvas.shape[0]
    h, w = patch.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + w, size), min(y0 + h, size)
    canvas[cy0:cy1, cx0:cx1] = patch[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]


def test_stats_are_sane_and_printed(worlds):
    stats = worlds["stats"]
    on_disk = json.loads((worlds["a"] / "stats.json").read_text())
    assert on_disk == {k: v for k, v in stats.items() if k != "build_seconds"}
    calibration = stats["calibration"]
    assert 0.0 < calibration["iou_zero"]["world"] < 0.3
    assert 0.05 < calibration["iou_gt_0.5"]["world"] < 0.5
    assert 0.0 <= calibration["multilabel"]["world"] < 0.4
    assert stats["val"]["shankar_multilabel"] <= calibration["multilabel"]["world"]
    assert stats["v2"]["top-images"]["primary_area_share"] > stats["v2"]["matched-frequency"]["primary_area_share"]
    table = format_stats(stats)
    assert "ImageNet" in table and ("in band" in table or "OUT OF BAND" in table)


def test_crop_statistics_helpers():
    full = [np.array([[0, 0, 100, 80]])]
    ious = crop_iou_values(full, [(100, 80)], crops_per_image=200, seed=0)
    assert ious.shape == (200,) and (ious >= 0.08 - 1e-6).all()
    assert np.array_equal(ious, crop_iou_values(full, [(100, 80)], crops_per_image=200, seed=0))
    assert multilabel_fraction([[1], [1, 2], [], [3, 3]]) == pytest.approx(1 / 3)
    assert imagenet_targets()["multilabel"] == pytest.approx(7443 / 46837)


def test_ensure_world_builds_once_and_wipes_an_interrupted_build(tmp_path, monkeypatch):
    params = tiny_params(n_train=8, n_extra=8, n_val=8, n_v2_per_class=0, n_rendition_per_class=0,
                         n_downstream_train_per_class=0, n_downstream_test_per_class=0, n_detection_train=2,
                         n_detection_val=2)
    stale = Run(Spec("world", params), tmp_path).create().dir
    (stale / "train").mkdir()
    (stale / "train" / "left-over.JPEG").write_bytes(b"")
    (stale / build.STAGING).mkdir()
    root = ensure_world(params, tmp_path)
    assert root == stale
    assert not (root / "train" / "left-over.JPEG").exists() and not (root / build.STAGING).exists()
    assert len(list((root / "val").rglob("*.JPEG"))) == 8 and (root / "metrics.json").is_file()
    monkeypatch.setattr(build, "build_world", lambda *args, **kwargs: pytest.fail("rebuilt a finished world"))
    assert ensure_world(params, tmp_path) == root


def test_paper_profile_has_no_world(tmp_path, capsys):
    with pytest.raises(NoWorldError):
        ensure_world(world_params("paper"), tmp_path)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["world", "--profile", "paper", "--runs", str(tmp_path)])
    assert args.func(args) == 2
    error = capsys.readouterr().err.strip()
    assert "paper" in error and "\n" not in error


@pytest.mark.slow
def test_proxy_world_is_calibrated_to_imagenet(tmp_path):
    stats = build_world(world_params("proxy"), tmp_path / "proxy", progress=False)
    for key, row in stats["calibration"].items():
        assert row["in_band"], f"{key}: world {row['world']:.4f}, ImageNet {row['imagenet']:.4f} ± {row['band']}"
