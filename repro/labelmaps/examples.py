"""The lite0 annotator's label maps of scikit-image's bundled photos: a real-annotator check that needs no
download, the README's figure (docs/img/lite0_label_maps.png) and Figure A2's panel (b).

Kept out of lite0.py: the annotator loads lite0, and these examples use the annotator and generation, so in one
module they would import each other back.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from repro.labelmaps.annotator import LITE0, build_annotator
from repro.labelmaps.generate import annotate_images
from repro.labelmaps.lite0 import imagenet_class_names
from repro.labelmaps.render import render_label_maps

EXAMPLE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def example_photos(names=EXAMPLE_PHOTOS) -> list[np.ndarray]:
    """scikit-image's bundled photos (offline), as RGB uint8 arrays."""
    from skimage import color, data

    photos = []
    for name in names:
        image = getattr(data, name)()
        if image.ndim == 2:
            image = color.gray2rgb(image)
        photos.append(np.ascontiguousarray(image[..., :3]))
    return photos


# 240 px at stride 16 gives the paper's 15x15 grid near the resolution lite0 was trained at (224); at 475 px and
# stride 32 the grid is the same but the objects are twice the size lite0 knows, and its scores collapse.
EXAMPLE_INPUT_SIZE = 240
EXAMPLE_OUTPUT_STRIDE = 16


def example_label_maps(names=EXAMPLE_PHOTOS, input_size: int = EXAMPLE_INPUT_SIZE,
                       output_stride: int = EXAMPLE_OUTPUT_STRIDE, topk: int = 5):
    """(photos, values [N, k, H, W], ids [N, k, H, W]): lite0's label maps of scikit-image's photos."""
    photos = example_photos(names)
    annotator = build_annotator(LITE0, output_stride=output_stride)
    values, ids = annotate_images(annotator, photos, input_size, topk)
    return photos, values, ids


def render_examples(path, names=EXAMPLE_PHOTOS, **settings) -> Path:
    """The example maps drawn as heatmaps beside their photos, saved to `path`."""
    photos, values, ids = example_label_maps(names, **settings)
    return render_label_maps(photos, (values, ids), imagenet_class_names(), path, titles=list(names))


if __name__ == "__main__":
    import sys

    print(render_examples(sys.argv[1] if len(sys.argv) > 1 else "docs/img/lite0_label_maps.png"))


def varied_label_maps(values, ids, count: int, num_classes: int = 1000, noise: float = 0.1,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` maps [count, k, H, W] (values float32, ids int64) made from real ones (e.g. example_label_maps'):
    map i is map i % len(values) with its classes renumbered by a random permutation of num_classes, turned and
    mirrored by one of the square's 8 symmetries (H = W) and its values jittered (N(0, noise)) and sorted again.
    Each keeps the spatial structure, class count and value spread of a real annotator's map, which is what a
    store's size and speed depend on (benchmarks/bench_store_reads.py)."""
    values, ids = np.asarray(values, dtype=np.float32), np.asarray(ids, dtype=np.int64)
    rng = np.random.default_rng(seed)
    out_values = np.empty((count, *values.shape[1:]), dtype=np.float32)
    out_ids = np.empty((count, *ids.shape[1:]), dtype=np.int64)
    for i in range(count):
        v, c = values[i % len(values)], rng.permutation(num_classes)[ids[i % len(ids)]]
        turns, mirror = int(rng.integers(4)), bool(rng.integers(2))
        v, c = np.rot90(v, turns, axes=(1, 2)), np.rot90(c, turns, axes=(1, 2))
        if mirror:
            v, c = v[:, :, ::-1], c[:, :, ::-1]
        v = v + rng.normal(0.0, noise, v.shape).astype(np.float32)
        order = np.argsort(-v, axis=0, kind="stable")
        out_values[i] = np.take_along_axis(v, order, axis=0)
        out_ids[i] = np.take_along_axis(c, order, axis=0)
    return out_values, out_ids
