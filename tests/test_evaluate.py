"""Evaluators: top-1/top-5, ReaL-style multi-label accuracy with empty sets excluded, per-class accuracy, and every
eval set of an installation scored by a model."""
import math
import shutil

import numpy as np
import pytest
import torch

from repro.data import ImageList, image_folder, open_imagenet
from repro.data.datasets import UnreadableImage
from repro.data.imagenet import EvalSet
from repro.evaluate import evaluate_model, multilabel_accuracy, per_class_accuracy, predict_logits, set_metrics
from repro.models import create_model
from tests.fixtures import NUM_CLASSES, TINY_MODEL


def one_hot_logits(predictions, num_classes=6):
    """Top-1 = predictions; below it the classes in index order (no ties)."""
    logits = -0.01 * torch.arange(num_classes, dtype=torch.float32).repeat(len(predictions), 1)
    logits[torch.arange(len(predictions)), torch.tensor(predictions)] = 1.0
    return logits


def test_multilabel_accuracy_excludes_empty_sets():
    accuracy, counted = multilabel_accuracy(np.array([0, 1, 2, 3]), [[0, 2], [], [3], [3, 1]])
    assert counted == 3 and accuracy == pytest.approx(200 / 3)
    assert math.isnan(multilabel_accuracy(np.array([0]), [[]])[0])


def test_set_metrics_names_and_values(tmp_path):
    labels = np.array([0, 1, 2, 3, 5])
    images = ImageList(tmp_path, tuple(f"val/x/ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 6)), labels)
    real = [[0], [2], [], [1, 3], [0]]
    eval_set = EvalSet("imagenet", images, {"real": real, "shankar": [[0], [], [], [], [1]]})
    metrics = set_metrics(eval_set, one_hot_logits([0, 2, 2, 3, 1]))
    assert metrics["imagenet_top1"] == pytest.approx(60.0)
    assert metrics["imagenet_top5"] == pytest.approx(80.0)  # image 4's class 5 ranks last of 6
    assert metrics["real_top1"] == pytest.approx(75.0) and metrics["real_images"] == 4
    assert metrics["shankar_top1"] == pytest.approx(100.0) and metrics["shankar_images"] == 2
    assert metrics["imagenet_images"] == 5
    assert metrics["imagenet_per_class_top1"] == [100.0, 0.0, 100.0, 100.0, None, 0.0]
    assert per_class_accuracy(np.array([1]), np.array([1]), 3) == [None, 100.0, None]


def test_v2_sets_report_their_own_names(tmp_path):
    images = ImageList(tmp_path, ("0/a.jpeg", "1/b.jpeg"), np.array([0, 1]))
    metrics = set_metrics(EvalSet("imagenetv2_threshold_0.7", images), one_hot_logits([0, 0]))
    assert metrics["imagenetv2_threshold_0.7_top1"] == pytest.approx(50.0)
    assert "imagenet_per_class_top1" not in metrics


def test_evaluate_model_scores_every_set_of_the_installation(imagenet):
    data = open_imagenet(imagenet.root, {"source": "world"})
    torch.manual_seed(0)
    model = create_model(TINY_MODEL, NUM_CLASSES)
    metrics = evaluate_model(model, data.eval_sets, size=32, crop_pct=1.0, batch_size=5)
    for key in ("imagenet_top1", "imagenet_top5", "real_top1", "shankar_top1", "imagenetv2_top_images_top1",
                "imagenetv2_matched_frequency_top1", "imagenetv2_threshold_0.7_top1"):
        assert 0.0 <= metrics[key] <= 100.0, key
    val = data.eval_sets[0]
    assert metrics["imagenet_images"] == len(val.images) == 2 * NUM_CLASSES
    assert metrics["real_images"] == sum(1 for s in imagenet.real if s)
    logits = predict_logits(model, val.images, size=32, crop_pct=1.0, batch_size=7)
    assert logits.shape == (len(val.images), NUM_CLASSES)
    top1 = logits.argmax(dim=1).numpy()
    assert metrics["imagenet_top1"] == pytest.approx(100.0 * np.mean(top1 == val.images.labels))
    assert metrics["real_top1"] == pytest.approx(multilabel_accuracy(top1, val.label_sets["real"])[0])


@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_evaluation_image_stops_with_one_line_naming_it(imagenet, tmp_path, workers):
    root = tmp_path / "root"
    shutil.copytree(imagenet.root / "val", root / "val")
    val = image_folder(root, "val", imagenet.wnids)
    damaged = val.path(3)
    damaged.write_bytes(damaged.read_bytes()[:200])
    model = create_model(TINY_MODEL, NUM_CLASSES)
    with pytest.raises(UnreadableImage) as caught:
        predict_logits(model, val, size=32, crop_pct=1.0, batch_size=4, workers=workers)
    message = str(caught.value)  # not wrapped in a loader worker's traceback
    assert "\n" not in message and message.startswith(f"cannot read evaluation image {damaged}: ")
    assert message.endswith("replace the file (an evaluation set is scored whole)")
