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
