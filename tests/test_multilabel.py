"""Table 10's multi-label path: the BCE objectives, mAP scoring in the trainer's evaluation, the COCO 2017 layout
and the world's detection split as the trainer's data, the oracle label maps of real world masks, and what enters
the fine-tunes' specs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from repro.config import get_path, profile_config, with_changes
from repro.data.coco import open_multilabel, read_coco
from repro.data.folders import ImageList
from repro.data.imagenet import EvalSet
from repro.evaluate.classification import headline, set_metrics
from repro.experiment import Context, discover
from repro.labelmaps import open_labelmaps
from repro.labelmaps.oracle import oracle_targets
from repro.pipeline import multilabel_labelmaps_ref, resources, student_spec
from repro.runs import cached
from repro.specs import Spec, leaf_paths
from repro.train.objectives import objective_class
from tests.paperscale import build_coco_2017

C = 4


def _batch(labels, boxes, values=None, ids=None):
    batch = {"image": torch.zeros(len(labels), 3, 8, 8), "label": torch.tensor(labels, dtype=torch.float32),
             "box": torch.tensor(boxes, dtype=torch.float32)}
    if values is not None:
        batch["labelmap_values"], batch["labelmap_ids"] = values, ids
    return batch


def _objective(mode, **fields):
    spec = {"mode": mode, "cutmix": False, **fields}
    return objective_class(mode)(spec, C, 8, torch.device("cpu"))


def test_multi_hot_keeps_the_images_labels_for_every_crop_and_trains_by_bce():
    objective = _objective("multi_hot")
    _, targets, _ = objective(_batch([[1, 0, 1, 0]], [[0.0, 0.0, 0.2, 0.2]]))
    assert targets.tolist() == [[1, 0, 1, 0]]
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    assert objective.criterion()(logits, targets).item() == pytest.approx(expected.item())


def test_oracle_and_machine_objectives_pool_the_crops_map():
    # one image, a 4x4 map: class 1 fills the left half, class 3 the top-right cell
    values = torch.zeros(1, 2, 4, 4)
    values[0, 0, :, :2] = 1
    values[0, 1, 0, 3] = 1
    ids = torch.tensor([1, 3])[None, :, None, None].expand(1, 2, 4, 4).contiguous()
    left, right = [0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0]
    oracle = _objective("multilabel_oracle", oracle_target="object_share", oracle_threshold=0.5)
    _, targets, _ = oracle(_batch([[0, 1, 0, 1]] * 2, [left, right], values.expand(2, -1, -1, -1),
                                  ids.expand(2, -1, -1, -1)))
    assert targets[0].tolist() == pytest.approx([0, 1, 0, 0], abs=1e-6)  # the left crop misses class 3
    assert targets[1].tolist() == pytest.approx([0, 0, 0, 1], abs=1e-6)  # the right one misses class 1
    logits = torch.full((1, C, 4, 4), -6.0)
    logits[0, 2, :, 2:] = 6.0  # class 2 on the right half
    dense_ids = torch.arange(C)[None, :, None, None].expand(1, C, 4, 4).contiguous()
    machine = _objective("multilabel_machine")
    _, targets, _ = machine(_batch([[0, 0, 1, 0]] * 2, [left, right], logits.expand(2, -1, -1, -1),
                                   dense_ids.expand(2, -1, -1, -1)))
    assert targets[0, 2] < 0.01 and targets[1, 2] > 0.99 and targets[:, [0, 1, 3]].max() < 0.01


def test_a_multi_hot_set_is_scored_by_map_on_the_trainers_evaluation():
    rng = np.random.default_rng(0)
    multi_hot = (rng.random((30, C)) < 0.4).astype(np.uint8)
    multi_hot[:, 3] = 0  # a class without positives is skipped and counted
    logits = torch.from_numpy(rng.normal(size=(30, C)).astype(np.float32))
    images = ImageList(".", tuple(f"{i}.jpg" for i in range(30)), multi_hot)
    metrics = set_metrics(EvalSet("coco", images), logits)
    expected = np.mean([average_precision_score(multi_hot[:, c], logits[:, c].numpy()) for c in range(3)])
    assert metrics["coco_map"] == pytest.approx(100 * expected)
    assert metrics["coco_classes_without_positives"] == 1 and metrics["coco_per_class_ap"][3] is None
    assert headline(metrics, "coco") == f"coco mAP {metrics['coco_map']:.2f}"


def test_coco_2017_opens_as_the_trainers_data(tmp_path):
    root = build_coco_2017(tmp_path / "coco", images_per_split=3)
    data = open_multilabel({"source": "coco", "root": str(root), "multilabel": True}, root)
    assert data.wnids == ["person", "dog"] and data.num_classes == 2 and data.val is None
    assert data.train.labels.tolist() == [[0, 1], [0, 0], [1, 1]] and data.train.path(0).is_file()
    assert [s.name for s in data.eval_sets] == ["coco"] and data.eval_sets[0].images.path(1).is_file()
    assert not data.skip_unreadable and open_multilabel(
        {"source": "coco", "root": str(root), "multilabel": True, "skip_unreadable": True}, root).skip_unreadable
    with pytest.raises(FileNotFoundError, match="COCO annotation file .*instances_train2017.json not found"):
        open_multilabel({"source": "coco", "root": str(tmp_path), "multilabel": True}, tmp_path)


def test_the_check_names_a_missing_coco_root_before_any_training(tmp_path, capsys):
    from repro.cli import main

    status = main(["check", "table10", "--profile", "paper", "--set", f"multilabel.root={tmp_path / 'nowhere'}",
                   "--set", f"multilabel.annotator.checkpoint={__file__}", "--set", f"data.root={tmp_path}"])
    assert status == 2
    assert "multilabel.root" in capsys.readouterr().err


def test_the_paper_profile_asks_for_the_machine_annotators_checkpoint():
    cfg = with_changes(profile_config("paper"), {"data.multilabel": True, "supervision.mode": "multilabel_machine"})
    with pytest.raises(ValueError, match="multilabel.annotator.checkpoint is not set"):
        multilabel_labelmaps_ref(cfg)


@pytest.fixture(scope="module")
def smoke_world(tmp_path_factory):
    cfg = profile_config("smoke")
    runs = tmp_path_factory.mktemp("runs")
    return cfg, runs, cached(Spec("world", cfg["world"]), resources(cfg, runs)).dir


def test_the_worlds_detection_categories_are_its_classes_in_order(smoke_world):
    # the machine annotator keeps the ImageNet-stage annotator's head (repro.pipeline.multilabel_annotator_ref)
    _, _, world = smoke_world
    detection = read_coco(world / "detection/annotations/instances_train.json", world / "detection")
    classes = [line.split()[0] for line in (world / "LOC_synset_mapping.txt").read_text().splitlines()]
    assert list(detection.wnids) == classes and detection.targets.sum(axis=1).min() >= 1


def test_oracle_maps_of_the_worlds_masks_give_the_multi_hot_vector_on_the_whole_image(smoke_world):
    cfg, runs, world = smoke_world
    cfg = with_changes(cfg, {"data.multilabel": True, "supervision.mode": "multilabel_oracle"})
    spec = Spec.from_json(multilabel_labelmaps_ref(cfg))
    store = open_labelmaps(cached(spec, resources(cfg, runs)).dir / "store")
    detection = read_coco(world / "detection/annotations/instances_train.json", world / "detection")
    values, ids = store.read(store.rows_for(detection.relpaths))
    assert values.shape[-1] == cfg["multilabel"]["grid"]
    whole = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(len(values), 4)
    targets = oracle_targets(values, ids, whole, len(detection.wnids))
    assert torch.allclose(targets, torch.from_numpy(detection.targets).float(), atol=1e-4)


def test_every_multilabel_option_reaches_the_fine_tunes_spec_and_none_of_table3s():
    from tests.test_core import _perturbed

    cfg = profile_config("proxy")
    ctx = Context("proxy", cfg, [0], "unused", "unused")
    table10, table3 = discover()["table10"], discover()["table3"]
    before = {s.hash for s in table10.plan(ctx)}
    students = {s.hash for s in table3.plan(ctx)}
    # the vanilla ImageNet student every ResNet-50 fine-tune starts from is Table 3's original-label run
    original = student_spec(with_changes(cfg, {"supervision.mode": "original", "seed": 0}))
    assert all(s["train"]["init"]["run"] == original.as_json() for s in table10.plan(ctx)
               if s["train"]["model"] == cfg["models"]["resnet50"])
    # paper scale's keys (a COCO root, a user's annotator) are not read at this scale: the annotator is trained
    unread = ("root", "annotator.checkpoint", "annotator.model")
    changes = [{f"multilabel.{dotted}": _perturbed(get_path(cfg["multilabel"], dotted))}
               for dotted in (".".join(map(str, path)) for path in leaf_paths(cfg["multilabel"]))
               if not dotted.startswith(unread)]
    changes += [{"supervision.oracle_target": "presence"}, {"supervision.oracle_threshold": 0.7}]
    from repro.pipeline import multilabel_data_spec
    assert multilabel_data_spec(with_changes(cfg, {"data.skip_unreadable": True}))["skip_unreadable"] is True
    assert "skip_unreadable" not in multilabel_data_spec(cfg)
    assert len(changes) >= 14
    for change in changes:
        changed = Context("proxy", with_changes(cfg, change), [0], "unused", "unused")
        assert {s.hash for s in table10.plan(changed)} != before, change
        assert {s.hash for s in table3.plan(changed)} == students, change


def test_a_trained_machine_annotator_must_be_the_suites_annotator():
    cfg = with_changes(profile_config("smoke"), {"data.multilabel": True, "supervision.mode": "multilabel_machine",
                                                  "multilabel.annotator.model": {"name": "resnet18", "kwargs": {}}})
    with pytest.raises(ValueError, match="multilabel.annotator.model .* is not annotator.model"):
        multilabel_labelmaps_ref(cfg)


def test_machine_maps_of_a_tresnet_checkpoint_keep_every_class_at_every_position(tmp_path):
    # the paper's machine annotator is a TResNet (ASL); timm's TResNet takes no output_stride option
    import timm

    coco = build_coco_2017(tmp_path / "coco", images_per_split=3)
    checkpoint = tmp_path / "tresnet.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("tresnet_m", num_classes=2).state_dict(), checkpoint)
    cfg = with_changes(profile_config("paper"), {
        "data.multilabel": True, "supervision.mode": "multilabel_machine", "multilabel.root": str(coco),
        "multilabel.annotator.model": {"name": "tresnet_m", "kwargs": {}},
        "multilabel.annotator.checkpoint": str(checkpoint), "multilabel.annotator.input_size": 64,
        "resources.workers": 0})
    store = open_labelmaps(cached(Spec.from_json(multilabel_labelmaps_ref(cfg)), resources(cfg, tmp_path)).dir
                           / "store")
    values, ids = store.read([0, 1, 2])
    assert values.shape == (3, 2, 2, 2)  # 64 px at stride 32, both categories
    assert (ids.sort(dim=1).values == torch.arange(2)[None, :, None, None]).all()


def test_a_multi_label_set_is_viewed_whole_so_no_object_at_an_edge_is_cut_out():
    from repro.data.transforms import EvalView

    wide = torch.zeros(3, 20, 60, dtype=torch.uint8)
    wide[:, :, :10] = 255  # an object at the left edge: a centre crop of the 20 px high image loses it
    whole = EvalView(20, 1.0, normalized=False, whole=True)(wide)
    cropped = EvalView(20, 1.0, normalized=False)(wide)
    assert whole.shape == cropped.shape == (3, 20, 20)
    assert cropped.max() == 0 and whole[:, :, :3].min() > 0.9
