"""The one way in to label maps: `open_labelmaps(path)` reads either format through the `LabelMaps` API."""
from __future__ import annotations

import os
from pathlib import Path

from repro.labelmaps.errors import LabelMapError
from repro.labelmaps.maps import LabelMaps
from repro.labelmaps.official import OfficialLabelMaps
from repro.labelmaps.packed import INDEX, PackedLabelMaps


def open_labelmaps(path: str | os.PathLike | LabelMaps, num_classes: int | None = None) -> LabelMaps:
    """A packed store (a directory with index.json) or an official directory (<wnid>/<stem>.pt files); label maps
    already open are returned as they are."""
    if isinstance(path, LabelMaps):
        return path
    path = Path(path)
    if not path.is_dir():
        raise LabelMapError(f"no label-map directory {path}")
    if (path / INDEX).exists():
        return PackedLabelMaps(path, num_classes)
    return OfficialLabelMaps(path, num_classes)
