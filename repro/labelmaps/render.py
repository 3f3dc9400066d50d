"""Figure A2's layout: each image next to the label-map heatmaps of its top-1 and top-2 classes."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from repro.pooling import global_pool_logits


def class_heatmap(values: torch.Tensor, ids: torch.Tensor, cls: int) -> np.ndarray:
    """Channel `cls` of the densified map [H, W] (logit where cls is in the position's top-k, else 0)."""
    return (values * (ids == cls)).sum(dim=0).numpy()


def render_label_maps(images: Sequence[Image.Image | np.ndarray], maps, class_names: Sequence[str],
                      path: str | os.PathLike, titles: Sequence[str] | None = None) -> Path:
    """A PNG with one row per image: image | top-1 class heatmap | top-2 class heatmap.

    maps: (values, ids) with each [N, k, H, W], or one (values [k, H, W], ids [k, H, W]) pair per image.
    The top classes and their scores are the softmax of the map averaged over the whole image.
    """
    if isinstance(maps, tuple) and len(maps) == 2 and torch.as_tensor(maps[0]).dim() == 4:
        maps = list(zip(torch.as_tensor(maps[0]), torch.as_tensor(maps[1])))
    if len(maps) != len(images):
        raise ValueError(f"{len(images)} images but {len(maps)} label maps")
    figure = Figure(figsize=(9.6, 2.6 * len(images)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(images), 3, squeeze=False)
    for row, (image, (values, ids)) in enumerate(zip(images, maps)):
        values, ids = torch.as_tensor(values).float(), torch.as_tensor(ids).long()
        pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
        height, width = pixels.shape[:2]
        scores = global_pool_logits(values[None], ids[None], len(class_names))[0].softmax(dim=0)
        top = scores.topk(2)
        axes[row, 0].imshow(pixels)
        axes[row, 0].set_title(titles[row] if titles else f"image ({values.shape[-2]}x{values.shape[-1]} map)",
                               fontsize=10)
        for col, (score, cls) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
            heat = class_heatmap(values, ids, cls)
            ax = axes[row, col]
            ax.imshow(pixels.mean(axis=2), cmap="gray", vmin=0, vmax=255)
            shown = ax.imshow(heat, cmap="inferno", alpha=0.7, interpolation="nearest",
                              extent=(0, width, height, 0))
            figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.02, label="logit")
            ax.set_title(f"top-{col}: {class_names[cls]} ({score:.2f})", fontsize=10)
        for ax in axes[row]:
            ax.set_axis_off()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
