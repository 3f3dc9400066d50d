"""ReLabel's label maps: the machine annotator, generation, storage (official and packed) and reading.

The trainer reads maps through `open_labelmaps(path)` and pools them with `repro.pooling.pool_labels`.
Modules, lowest first: errors, quantize (value types), maps (the reader API, ConcatLabelMaps), packed and official
(the two formats), reader (open_labelmaps), convert, verification; lite0, annotator, generate, examples.
"""
from repro.labelmaps.annotator import LITE0, Annotator, build_annotator
from repro.labelmaps.convert import derive_store, official_to_packed, packed_to_official, write_store
from repro.labelmaps.errors import LabelMapError
from repro.labelmaps.generate import annotate_images, generate_labelmaps
from repro.labelmaps.maps import ConcatLabelMaps, LabelMaps, TransposedLabelMaps, official_key
from repro.labelmaps.official import OfficialLabelMaps, load_official, save_official
from repro.labelmaps.packed import PackedLabelMaps, PackedWriter, write_packed
from repro.labelmaps.quantize import DTYPES, bytes_per_image
from repro.labelmaps.reader import open_labelmaps
from repro.labelmaps.verification import verify

__all__ = ["DTYPES", "LITE0", "Annotator", "ConcatLabelMaps", "LabelMapError", "LabelMaps", "OfficialLabelMaps",
           "PackedLabelMaps", "PackedWriter", "TransposedLabelMaps", "annotate_images", "build_annotator", "bytes_per_image",
           "derive_store", "generate_labelmaps", "load_official", "official_key", "official_to_packed",
           "open_labelmaps", "packed_to_official", "save_official", "verify", "write_packed", "write_store"]
