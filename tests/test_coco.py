"""Table 10's COCO-format reader (pycocotools) on a hand-made annotation file with RLE and polygon masks, and the
mAP over classes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from repro.data.coco import instance_masks, mean_average_precision, read_coco


def _coco(tmp_path):
    """Three images: two objects of categories 3 and 7 (ids with a gap, as COCO's), one of 7, and none."""
    images_dir = tmp_path / "val2017"
    images_dir.mkdir()
    square = np.zeros((20, 30), dtype=np.uint8)
    square[2:8, 3:9] = 1
    rle = mask_utils.encode(np.asfortranarray(square))
    annotations = [
        {"id": 1, "image_id": 10, "category_id": 7, "iscrowd": 0, "bbox": [3, 2, 6, 6], "area": 36,
         "segmentation": {"size": [20, 30], "counts": rle["counts"].decode("ascii")}},
        {"id": 2, "image_id": 10, "category_id": 3, "iscrowd": 0, "bbox": [10, 10, 10, 5], "area": 50,
         "segmentation": [[10, 10, 20, 10, 20, 15, 10, 15]]},
        {"id": 3, "image_id": 11, "category_id": 7, "iscrowd": 1, "bbox": [0, 0, 4, 4], "area": 16,
         "segmentation": {"size": [20, 30], "counts": rle["counts"].decode("ascii")}},
    ]
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 30, "height": 20} for i in (10, 11, 12)]
    for image in images:
        Image.new("RGB", (30, 20)).save(images_dir / image["file_name"])
    categories = [{"id": 3, "name": "car"}, {"id": 5, "name": "bus"}, {"id": 7, "name": "dog"}]
    path = tmp_path / "instances_val2017.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path, images_dir


def test_targets_are_multi_hot_over_categories_in_id_order(tmp_path):
    path, images_dir = _coco(tmp_path)
    images = read_coco(path, images_dir)
    assert images.categories == ("car", "bus", "dog") and images.image_ids.tolist() == [10, 11, 12]
    assert images.targets.tolist() == [[1, 0, 1], [0, 0, 1], [0, 0, 0]]  # the crowd dog counts; 12 has none
    assert images.path(0).is_file()
    masks = dict(instance_masks(images, 0))
    assert masks[2].sum() == 36 and masks[2][2:8, 3:9].all()   # the RLE square, category 7 -> index 2
    assert masks[0][10:15, 10:20].mean() > 0.9                  # the polygon, category 3 -> index 0


def test_a_missing_file_is_one_line_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="COCO annotation file .*instances_train2017.json not found"):
        read_coco(tmp_path / "instances_train2017.json", tmp_path)


def test_map_is_the_macro_average_over_classes_with_positives():
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    perfect = mean_average_precision(targets.astype(float), targets)
    assert perfect["map"] == 100.0 and perfect["classes_without_positives"] == 1 and perfect["per_class_ap"][2] is None
    scores = np.array([[0.9, 0.1, 0.0], [0.8, 0.9, 0.0], [0.7, 0.2, 0.0], [0.1, 0.3, 0.0]])
    result = mean_average_precision(scores, targets)
    assert result["per_class_ap"][0] == pytest.approx(100 * (1 + 2 / 3) / 2)  # positives ranked 1st and 3rd
    assert result["map"] == pytest.approx(np.mean(result["per_class_ap"][:2]))
