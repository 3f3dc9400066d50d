"""The world's parts (train, extra, val, the v2 variants, rendition, downstream tasks, detection), where each of
their images goes, and how image `index` of a part is drawn.

Image (part, index) depends only on the world's parameters, the part's name and the index (its random generator is
seeded by all three), so workers may draw images in any order and the world comes out byte-identical.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from repro.world.backgrounds import load_sources
from repro.world.glyphs import (NOTO_SIZE, OPENMOJI_SIZE, ObjectClass, downstream_classes, glyph_atlas,
                                noto_font_path, openmoji_font_path, world_classes)
from repro.world.params import SCENE
from repro.world.scene import Placed, Wanted, background_layer, draw_scene, glyph_pyramid

WORLD_SPLITS = ("train", "extra", "val")
ANNOTATED = ("train", "extra", "val", "detection/train", "detection/val")


def wnid(class_index: int) -> str:
    """Pseudo-wnid n9xxxxxxx: ImageNet's pattern, sorting in class-index order."""
    return f"n9{class_index:07d}"


def v2_folder(variant: str) -> str:
    return f"v2/imagenetv2-{variant}-format-val"


@dataclass
class Assets:
    """What drawing needs, loaded once per build and shared with the workers."""
    params: dict
    classes: list[ObjectClass]
    glyphs: dict[str, tuple]             # OpenMoji glyph pyramids of every glyph in use
    rendition_glyphs: dict[str, tuple]   # Noto pyramids of the world's glyphs (empty without the font)
    downstream: dict[str, list[ObjectClass]]
    sources: list = field(repr=False)

    @property
    def rendition_available(self) -> bool:
        return all(any(g in self.rendition_glyphs for g in c.glyphs) for c in self.classes)


def _pyramids(texts, font_path, size) -> dict[str, tuple]:
    return {text: glyph_pyramid(glyph) for text, glyph in glyph_atlas(texts, font_path, size).items()}


def load_assets(params: dict) -> Assets:
    classes = world_classes(params)
    downstream = {task: downstream_classes(spec, params) for task, spec in params["downstream_tasks"].items()}
    world_texts = [g for c in classes for g in c.glyphs]
    texts = dict.fromkeys(world_texts + [g for cs in downstream.values() for c in cs for g in c.glyphs])
    noto = noto_font_path()
    return Assets(params, classes, _pyramids(texts, openmoji_font_path(), OPENMOJI_SIZE),
                  _pyramids(world_texts, noto, NOTO_SIZE) if noto else {}, downstream, load_sources())


@dataclass(frozen=True)
class Part:
    name: str    # "train", "v2/top-images", "rendition", "downstream/faces/test", "detection/val", ...
    count: int
    scene: dict  # scene settings (the world's, or a v2 variant's)


def plan_parts(assets: Assets) -> list[Part]:
    params = assets.params
    scene = {key: params[key] for key in SCENE}
    n_classes = len(assets.classes)
    parts = [Part(split, params[f"n_{split}"], scene) for split in WORLD_SPLITS]
    for variant, shift in params["v2_variants"].items():
        unknown = set(shift) - set(SCENE)
        if unknown:
            raise KeyError(f"v2 variant {variant!r} shifts unknown scene settings {sorted(unknown)}")
        parts.append(Part(f"v2/{variant}", params["n_v2_per_class"] * n_classes, {**scene, **shift}))
    if assets.rendition_available:
        parts.append(Part("rendition", params["n_rendition_per_class"] * n_classes, scene))
    for task, classes in assets.downstream.items():
        for split in ("train", "test"):
            parts.append(Part(f"downstream/{task}/{split}", params[f"n_downstream_{split}_per_class"] * len(classes),
                              scene))
    parts += [Part("detection/train", params["n_detection_train"], scene),
              Part("detection/val", params["n_detection_val"], scene)]
    return parts


def part_classes(assets: Assets, part: str) -> list[ObjectClass]:
    if part.startswith("downstream/"):
        return assets.downstream[part.split("/")[1]]
    return assets.classes


def label_of(assets: Assets, part: str, index: int) -> int | None:
    """Classes take turns, so every split is balanced."""
    if part.startswith("detection/"):
        return None
    return index % len(part_classes(assets, part))


def image_path(assets: Assets, part: str, index: int) -> str:
    """The image's path relative to the world's root, in the layout docs/data-layout.md describes."""
    label = label_of(assets, part, index)
    if part in ("train", "extra", "rendition"):
        return f"{part}/{wnid(label)}/{wnid(label)}_{index}.JPEG"
    if part == "val":
        return f"val/{wnid(label)}/ILSVRC2012_val_{index + 1:08d}.JPEG"
    if part.startswith("v2/"):
        return f"{v2_folder(part[3:])}/{label}/{index:06d}.jpeg"
    if part.startswith("downstream/"):
        return f"{part}/{part_classes(assets, part)[label].name}/{index:05d}.jpg"
    if part.startswith("detection/"):
        return f"{part}/{index + 1:06d}.jpg"
    raise ValueError(f"unknown part {part!r}")


def image_rng(seed: int, part: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(part.encode()), index])


def _uniform(rng: np.random.Generator, bounds) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _glyph(rng: np.random.Generator, cls: ObjectClass, atlas: dict[str, tuple]) -> tuple:
    usable = [g for g in cls.glyphs if g in atlas]
    return atlas[usable[rng.integers(len(usable))]]


def _wanted(assets: Assets, part: Part, index: int, rng: np.random.Generator) -> list[Wanted]:
    params, scene, size = assets.params, part.scene, assets.params["image_size"]
    if part.name.startswith("detection/"):
        n = int(rng.integers(params["detection_objects"][0], params["detection_objects"][1] + 1))
        classes = rng.integers(len(assets.classes), size=n)
        return [Wanted(int(c), _glyph(rng, assets.classes[c], assets.glyphs),
                       size * _uniform(rng, params["detection_object_size"]), depth=i)
                for i, c in enumerate(classes)]
    label = label_of(assets, part.name, index)
    if part.name.startswith("downstream/"):
        cls = part_classes(assets, part.name)[label]
        return [Wanted(label, _glyph(rng, cls, assets.glyphs), size * _uniform(rng, params["downstream_object_size"]),
                       depth=0, primary=True)]
    atlas = assets.rendition_glyphs if part.name == "rendition" else assets.glyphs
    small = rng.random() < scene["p_small_primary"]
    longest = size * _uniform(rng, scene["primary_size_small"] if small else scene["primary_size_large"])
    wanted = [Wanted(label, _glyph(rng, assets.classes[label], atlas), longest, depth=0, primary=True)]
    if rng.random() < scene["p_multi"]:
        n_others = int(rng.integers(1, scene["max_others"] + 1))
        others = rng.choice([c for c in range(len(assets.classes)) if c != label], size=n_others, replace=False)
        for c in others:
            depth = 1 if rng.random() < scene["p_other_front"] else -1
            glyph = _glyph(rng, assets.classes[c], atlas)
            wanted.append(Wanted(int(c), glyph, size * _uniform(rng, scene["other_size"]), depth=depth))
    return wanted


def _box(mask: np.ndarray) -> list[float]:
    """COCO's [x, y, w, h] of a mask, as pycocotools computes it."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]


def draw(assets: Assets, part: Part, index: int) -> tuple[Image.Image, list[Placed]]:
    """Image `index` of `part` (RGB) and its placed objects, with their patches, positions and coverages."""
    rng = image_rng(assets.params["seed"], part.name, index)
    wanted = _wanted(assets, part, index, rng)
    min_visible = 0.0 if part.name.startswith("detection/") else part.scene["min_primary_visible"]
    return draw_scene(rng, assets.params["image_size"], part.scene, assets.sources, wanted, min_visible)


def bare_background(assets: Assets, part: Part, index: int) -> Image.Image:
    """Image `index`'s background without its objects and front clutter: its random stream replayed up to them."""
    rng = image_rng(assets.params["seed"], part.name, index)
    _wanted(assets, part, index, rng)  # the draws that come before the background's
    return background_layer(rng, assets.params["image_size"], part.scene, assets.sources)[0]


def generate(assets: Assets, part: Part, index: int) -> tuple[Image.Image, dict]:
    """Image `index` of `part` (RGB) and its record: file name, label and the visible objects."""
    image, placed = draw(assets, part, index)
    objects = []
    for p in placed:
        mask = p.mask
        if not mask.any():
            continue
        obj = {"class": p.class_index, "primary": p.primary, "bbox": _box(mask), "area": int(mask.sum()),
               "visible": round(p.visible, 4)}
        if part.name in ANNOTATED:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            obj["segmentation"] = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
        objects.append(obj)
    record = {"file_name": image_path(assets, part.name, index), "label": label_of(assets, part.name, index),
              "objects": objects}
    return image, record


def label_sets(record: dict, params: dict) -> tuple[list[int], list[int]]:
    """The image's ReaL-style and Shankar-style label sets: its label plus the other classes that are present."""
    real, shankar = {record["label"]}, {record["label"]}
    min_side = params["shankar_min_size"] * params["image_size"]
    for obj in record["objects"]:
        if obj["visible"] >= params["real_min_visible"]:
            real.add(obj["class"])
        if obj["visible"] >= params["shankar_min_visible"] and max(obj["bbox"][2:]) >= min_side:
            shankar.add(obj["class"])
    return sorted(real), sorted(shankar)
