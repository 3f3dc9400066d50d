"""ReLabel's label maps: the machine annotator, generation, storage (official and packed) and reading.

The trainer reads maps through `open_labelmaps(path)` and pools them with `repro.pooling.pool_labels`.
"""
from repro.labelmaps.annotator import LITE0, Annotator, build_annotator
from repro.labelmaps.generate import annotate_images, generate_labelmaps
from repro.labelmaps.store import (LabelMapError, LabelMaps, derive_store, official_to_packed, open_labelmaps,
                                   packed_to_official, verify, write_packed)

__all__ = ["LITE0", "Annotator", "LabelMapError", "LabelMaps", "annotate_images", "build_annotator",
           "derive_store", "generate_labelmaps", "official_to_packed", "open_labelmaps",
           "packed_to_official", "verify", "write_packed"]
