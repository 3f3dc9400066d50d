"""What label maps say about crops and objects: the pooled label of random crops (Figures 5 and A3) and where
each top class's heatmap peaks (Figure A2).

Crops come from repro.crops with the generators the rest of the suite uses: val image i's crops from
crop_rng(seed, i), as `repro.world.stats.crop_iou_values` draws them (so Figure 5's crops are Figure 2's), and a
training image's crop of an epoch from crop_rng(seed, epoch, index), the first draw of the trainer's TrainCrop.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from repro.boxes import ValBoxes
from repro.crops import IMAGENET_RATIO, IMAGENET_SCALE, crop_rng, max_iou_with_boxes, sample_rrc_boxes
from repro.data.datasets import UnreadableImage, unreadable_training_image
from repro.data.folders import ImageList
from repro.data.transforms import read_image
from repro.imagefiles import IMAGE_ERRORS
from repro.labelmaps.render import class_heatmap
from repro.labelmaps.maps import LabelMaps
from repro.pooling import global_pool_logits, pool_labels

CROPS_PER_POOL = 8192  # crops pooled in one call: bounds the repeated label maps held in memory


def normalised(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel boxes (x1, y1, x2, y2) as fractions of the image, the coordinates LabelPooling takes."""
    return np.asarray(boxes, dtype=np.float64) / np.array([width, height, width, height], dtype=np.float64)


def crop_confidences(maps: LabelMaps, val: ValBoxes, crops_per_image: int, seed: int,
                     variant: str = "local_multi") -> tuple[np.ndarray, np.ndarray]:
    """(IoU with the labelled object's boxes, confidence = max_c of the pooled label) of every crop, image by
    image: [len(val) * crops_per_image] each."""
    rows = maps.rows_for(val.relpaths)
    per_pool = max(1, CROPS_PER_POOL // crops_per_image)
    ious, confidences = [], []
    for start in range(0, len(val), per_pool):
        stop = min(start + per_pool, len(val))
        boxes = []
        for i in range(start, stop):
            width, height = val.sizes[i]
            crops = sample_rrc_boxes(width, height, crops_per_image, crop_rng(seed, i))
            ious.append(max_iou_with_boxes(crops, val.boxes[i]))
            boxes.append(normalised(crops, width, height))
        values, ids = maps.read(rows[start:stop])
        targets = pool_labels(values.repeat_interleave(crops_per_image, dim=0),
                              ids.repeat_interleave(crops_per_image, dim=0),
                              torch.from_numpy(np.concatenate(boxes)), maps.num_classes, variant)
        confidences.append(targets.max(dim=1).values.numpy())
    return np.concatenate(ious), np.concatenate(confidences).astype(np.float64)


def analysable(images: ImageList, indices: Sequence[int], maps: LabelMaps, skip_unreadable: bool = False
               ) -> np.ndarray:
    """`indices` less the images whose maps are blank (the annotator's pass could not read them), each image left
    decoded as the students' loader decodes it: one that fails stops the analysis with the students' one-line
    error, or under `data.skip_unreadable` is left out (a released map exists for every image, a damaged copy's
    included, so no blank row tells it)."""
    indices = np.asarray(indices)
    blank = maps.skipped_rows
    if len(blank):
        indices = indices[~np.isin(maps.rows_for([images.relpaths[int(i)] for i in indices]), blank)]
    return indices[[_decodes(images.path(int(i)), skip_unreadable) for i in indices]] if len(indices) else indices


def _decodes(path, skip_unreadable: bool) -> bool:
    """Whether the students' loader reads the image (decoded whole: a truncated file fails only there)."""
    try:
        read_image(path)
    except IMAGE_ERRORS as error:
        if skip_unreadable:
            return False
        raise UnreadableImage.training(unreadable_training_image(path, error), "leave it out") from None
    return True


def epoch_crop_boxes(images: ImageList, indices: Sequence[int], seed: int, epoch: int = 0, scale=IMAGENET_SCALE,
                     ratio=IMAGENET_RATIO) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The pixel boxes [N, 4] of the crops that a student trained with `seed` sees in `epoch` (0 = the first) of
    the training images at `indices` of its training list, and each image's (width, height)."""
    boxes, sizes = [], []
    for index in indices:
        with Image.open(images.path(int(index))) as image:
            width, height = image.size
        boxes.append(sample_rrc_boxes(width, height, 1, crop_rng(seed, epoch, int(index)), scale, ratio)[0])
        sizes.append((width, height))
    return np.array(boxes).reshape(-1, 4), sizes


def normalised_crops(boxes: np.ndarray, sizes: Sequence[tuple[int, int]]) -> np.ndarray:
    """`epoch_crop_boxes`' pixel boxes [N, 4] as fractions of their images (width, height), for LabelPooling."""
    return np.stack([normalised(box, width, height) for box, (width, height) in zip(boxes, sizes)])


def pooled_targets(maps: LabelMaps, relpaths: Sequence[str], boxes: np.ndarray, variant: str = "local_multi"
                   ) -> torch.Tensor:
    """The ReLabel targets [N, C] of crops `boxes` (normalised, one per image) of the images `relpaths`."""
    values, ids = maps.read(maps.rows_for(relpaths))
    return pool_labels(values, ids, torch.as_tensor(boxes, dtype=torch.float32), maps.num_classes, variant)


def top2_peaks(values: torch.Tensor, ids: torch.Tensor, num_classes: int, width: int, height: int
               ) -> list[tuple[int, float, tuple[float, float]]]:
    """For the map's top-1 and top-2 classes (the softmax of the whole-image average, as Figure A2 ranks them):
    (class, score, peak) with the peak the centre, in image pixels (x, y), of the cell where that class's
    heatmap is largest."""
    values, ids = torch.as_tensor(values).float(), torch.as_tensor(ids).long()
    scores = global_pool_logits(values[None], ids[None], num_classes)[0].softmax(dim=0)
    grid_h, grid_w = values.shape[-2:]
    out = []
    for score, cls in zip(*scores.topk(2)):
        heat = class_heatmap(values, ids, int(cls))
        row, col = np.unravel_index(int(np.argmax(heat)), heat.shape)
        out.append((int(cls), float(score), ((col + 0.5) * width / grid_w, (row + 0.5) * height / grid_h)))
    return out


def boxes_containing(point: tuple[float, float], boxes: np.ndarray) -> frozenset[int]:
    """Indices of the boxes (x1, y1, x2, y2) that contain the point."""
    x, y = point
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    inside = (boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3])
    return frozenset(np.flatnonzero(inside).tolist())


def peaks_in_different_objects(first: tuple[float, float], second: tuple[float, float], boxes: np.ndarray) -> bool:
    """Whether two heatmap peaks fall in different objects' boxes: each lies in some object's box, and not in
    the same set of boxes (two peaks inside the overlap of the same boxes cannot be told apart)."""
    a, b = boxes_containing(first, boxes), boxes_containing(second, boxes)
    return bool(a) and bool(b) and a != b


def classes_at(point: tuple[float, float], classes: np.ndarray, masks: np.ndarray) -> frozenset[int]:
    """The classes of the objects whose visible masks ([n, H, W] bool, `classes` [n]) hold the pixel at `point`
    (x, y in pixels, as `top2_peaks` gives a cell's centre); empty on the background."""
    masks = np.asarray(masks, dtype=bool)
    height, width = masks.shape[-2:]
    x, y = min(max(int(point[0]), 0), width - 1), min(max(int(point[1]), 0), height - 1)
    return frozenset(np.asarray(classes)[masks[:, y, x]].tolist())


def peaks_on_own_objects(first: tuple[int, tuple[float, float]], second: tuple[int, tuple[float, float]],
                         classes: np.ndarray, masks: np.ndarray) -> bool | None:
    """Figure A2's claim on one image: the top-1 and top-2 heatmaps lie disjointly, each at its own object.

    `first` and `second` are (class, peak) of the map's top-1 and top-2 classes. None where the question does not
    arise: one of the two classes is no object of the image (the map ranks a class the image does not hold, whose
    heatmap has no object of its own to peak on). Else whether each peak lies on the visible pixels of an object of
    its own class; the two classes differ, so those are two different objects."""
    present = set(np.asarray(classes).tolist())
    (class1, peak1), (class2, peak2) = first, second
    if class1 not in present or class2 not in present:
        return None
    return class1 in classes_at(peak1, classes, masks) and class2 in classes_at(peak2, classes, masks)


def balanced_top1_subsample(maps: LabelMaps, per_class: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `maps` balanced over their whole-image top-1 class, the way the paper subsamples ImageNet-21k
    (after Yalniz et al., 2019): of the images whose top-1 is class c, the `per_class` the map is most confident of
    (all of them where there are fewer). Returns (rows ascending, each row's top-1 class)."""
    top1, confidence = maps.whole_image_top1(chunk=chunk)
    read = np.flatnonzero(top1 >= 0)  # not the images the pass skipped as unreadable
    order = read[np.lexsort((-confidence[read], top1[read]))]  # by class, most confident first (ties in row order)
    classes = top1[order]
    rank = np.arange(len(order)) - np.searchsorted(classes, classes)  # position within its class
    rows = np.sort(order[rank < per_class])
    return rows, top1[rows]
