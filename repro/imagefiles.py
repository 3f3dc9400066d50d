"""Which files are images, and the images under a folder: the one lister that the data loaders, label-map
generation and verification share, so a store is made and checked for exactly the images that training reads;
and how a loader of images reports one it cannot read (`collate_readable`, `readable_batches`).

Kept outside `repro.data`, whose package imports the datasets and so the label-map reader: the label-map package
can list images without importing itself back.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from PIL import Image
from torch.utils.data import default_collate

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")
# what Pillow raises for a truncated, empty, non-image or oversized file
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


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
    return sorted(walk_images(root, split))


def walk_images(root: str | os.PathLike, split: str) -> Iterator[str]:
    """`list_images`' paths in the order the folders are walked: the first comes at once, however many follow."""
    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"no image folder {split_dir}")
    for folder, subfolders, files in os.walk(split_dir, followlinks=True):
        subfolders[:] = [name for name in subfolders if not is_hidden(name)]
        yield from (f"{Path(folder).relative_to(root).as_posix()}/{name}" for name in files if is_image(name))


def collate_readable(samples: list[tuple]) -> tuple | str:
    """torch's collation of (image or the message of an image that could not be read, ...) samples, or the first
    such message, which `readable_batches` raises in the main process: raised in a loader worker, it would reach
    the user inside the worker's traceback."""
    unreadable = next((sample[0] for sample in samples if isinstance(sample[0], str)), None)
    return unreadable if unreadable is not None else default_collate(samples)


def readable_batches(loader: Iterable, error: type[Exception], advice: str) -> Iterator[tuple]:
    """The batches of a loader collated by `collate_readable`; an image that could not be read raises `error`,
    one line naming it, followed by `advice`."""
    for batch in loader:
        if isinstance(batch, str):
            raise error(f"{batch}: {advice}")
        yield batch
