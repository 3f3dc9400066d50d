"""Which files are images, and the images under a folder: the one lister that the data loaders, label-map
generation and verification share, so a store is made and checked for exactly the images that training reads.

Kept outside `repro.data`, whose package imports the datasets and so the label-map reader: the label-map package
can list images without importing itself back.
"""
from __future__ import annotations

import os
from pathlib import Path

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(root: str | os.PathLike, split: str) -> list[str]:
    """Sorted root-relative paths of every image under <root>/<split> at any depth (symlinked folders followed)."""
    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"no image folder {split_dir}")
    return sorted(f"{Path(folder).relative_to(root).as_posix()}/{name}"
                  for folder, _, files in os.walk(split_dir, followlinks=True) for name in files if is_image(name))
