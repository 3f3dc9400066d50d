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


def is_hidden(name: str) -> bool:
    """A dot-folder is a tool's (Jupyter's .ipynb_checkpoints, a sync client's), never a class: read as one, it
    would shift every class index after it."""
    return name.startswith(".")


def class_folders(folder: str | os.PathLike) -> list[str]:
    """Sorted names of the class folders under `folder`: its sub-folders, hidden ones left out."""
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not is_hidden(entry.name))


def list_images(root: str | os.PathLike, split: str) -> list[str]:
    """Sorted root-relative paths of every image under <root>/<split> at any depth (symlinked folders followed,
    hidden ones left out, as `class_folders` leaves them)."""
    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"no image folder {split_dir}")
    paths = []
    for folder, subfolders, files in os.walk(split_dir, followlinks=True):
        subfolders[:] = [name for name in subfolders if not is_hidden(name)]
        paths.extend(f"{Path(folder).relative_to(root).as_posix()}/{name}" for name in files if is_image(name))
    return sorted(paths)
