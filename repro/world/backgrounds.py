"""Backgrounds: random crops of the photos and textures that scikit-image bundles, recoloured and flattened, or
procedural colour fields; then procedural clutter shapes.

The files are read straight from scikit-image's data folder, so nothing is ever fetched. Each source is listed with
the licence scikit-image states for it (images of unclear licence are left out).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw

# file in skimage/data -> (what it shows, licence as scikit-image's documentation states it)
SOURCES = {
    "astronaut.png": ("photograph of Eileen Collins, NASA", "public domain"),
    "brick.png": ("brick texture, CC0Textures", "CC0"),
    "camera.png": ("photograph of a cameraman, Lav Varshney", "CC0"),
    "cell.png": ("microscopy of a cell", "CC0"),
    "chelsea.png": ("photograph of a cat, Stefan van der Walt", "CC0"),
    "clock_motion.png": ("photograph of a wall clock, Stefan van der Walt", "public domain"),
    "coffee.png": ("photograph of a coffee cup, Rachel Michetti", "CC0"),
    "coins.png": ("photograph of Greek coins", "no known copyright restrictions"),
    "grass.png": ("grass texture, CC0Textures", "CC0"),
    "gravel.png": ("gravel texture, CC0Textures", "CC0"),
    "hubble_deep_field.jpg": ("Hubble deep field, NASA", "public domain"),
    "ihc.png": ("immunohistochemistry stain", "no known copyright restrictions"),
    "microaneurysms.png": ("retina detail, Andreas Maier", "CC0"),
    "retina.jpg": ("fundus photograph, Wikimedia Commons", "CC0"),
    "rocket.jpg": ("photograph of a rocket launch, SpaceX", "public domain"),
    "text.png": ("photograph of printed text", "public domain"),
}
MAX_SOURCE_SIDE = 256  # sources are shrunk once so that cropping stays cheap


def skimage_data_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


def load_sources() -> list[Image.Image]:
    images = []
    for name in SOURCES:
        image = Image.open(skimage_data_dir() / name)
        image = image.convert("L" if image.mode in ("L", "I", "I;16", "1") else "RGB")
        image.thumbnail((MAX_SOURCE_SIDE, MAX_SOURCE_SIDE), Image.Resampling.BILINEAR)
        images.append(image)
    return images


def _photo(rng: np.random.Generator, sources: list[Image.Image], size: int) -> Image.Image:
    source = sources[rng.integers(len(sources))]
    w, h = source.size
    side = min(w, h) * rng.uniform(0.25, 1.0)
    x0, y0 = rng.uniform(0, w - side), rng.uniform(0, h - side)
    crop = source.resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + side, y0 + side),
                         reducing_gap=1.5)
    if crop.mode == "L":  # grey source: tint it with a random colour
        r, g, b = rng.uniform(0.3, 1.0, size=3)
        crop = crop.convert("RGB").convert("RGB", matrix=(r, 0, 0, 0, 0, g, 0, 0, 0, 0, b, 0))
    else:
        bands = crop.split()
        crop = Image.merge("RGB", [bands[i] for i in rng.permutation(3)])
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop


def _procedural(rng: np.random.Generator, size: int) -> Image.Image:
    """A smooth colour field: a 3 x 3 grid of colours around two base colours, bicubically enlarged."""
    start, end = rng.uniform(0, 255, size=(2, 3))
    mix = rng.uniform(0, 1, size=(3, 3, 1))
    grid = start * (1 - mix) + end * mix + rng.uniform(-20, 20, size=(3, 3, 3))
    return Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8), "RGB").resize(
        (size, size), Image.Resampling.BICUBIC)


def background(rng: np.random.Generator, sources: list[Image.Image], size: int, scene: dict) -> Image.Image:
    """A size x size RGB image with its contrast scaled by scene["background_contrast"]."""
    if rng.random() < scene["p_procedural_background"]:
        image = _procedural(rng, size)
    else:
        image = _photo(rng, sources, size)
    # per channel: mean + contrast * (value - mean), a blend with the flat mean image; then a brightness shift
    small = np.asarray(image.reduce(8), dtype=np.float32).reshape(-1, 3)
    mean = tuple(int(v) for v in np.rint(small.sum(axis=0) / len(small)))
    contrast = scene["background_contrast"] * rng.uniform(0.8, 1.2)
    image = Image.blend(Image.new("RGB", image.size, mean), image, contrast)
    shift = int(round(rng.uniform(-0.1, 0.1) * 255))
    flat = Image.new("RGB", image.size, (abs(shift),) * 3)
    return ImageChops.add(image, flat) if shift >= 0 else ImageChops.subtract(image, flat)


def _shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """One random translucent ellipse, rectangle, polygon or line."""
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3)) + (int(rng.integers(70, 200)),)
    cx, cy = rng.uniform(0, size, size=2)
    r = size * rng.uniform(0.04, 0.2)
    kind = rng.integers(4)
    if kind == 0:
        draw.ellipse((cx - r, cy - r * rng.uniform(0.3, 1), cx + r, cy + r * rng.uniform(0.3, 1)), fill=colour)
    elif kind == 1:
        draw.rectangle((cx - r, cy - r * rng.uniform(0.2, 1), cx + r, cy + r), fill=colour)
    elif kind == 2:
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=int(rng.integers(3, 7))))
        radii = r * rng.uniform(0.5, 1.3, size=len(angles))
        draw.polygon([(float(cx + q * np.cos(a)), float(cy + q * np.sin(a))) for a, q in zip(angles, radii)],
                     fill=colour)
    else:
        x2, y2 = rng.uniform(0, size, size=2)
        draw.line((cx, cy, x2, y2), fill=colour, width=int(rng.integers(1, 4)))


def draw_clutter(rng: np.random.Generator, image: Image.Image, count: int) -> None:
    """count clutter shapes blended straight onto an RGB image."""
    draw = ImageDraw.Draw(image, "RGBA")
    for _ in range(count):
        _shape(draw, rng, image.width)


def clutter_layer(rng: np.random.Generator, size: int, count: int) -> Image.Image | None:
    """count clutter shapes as an RGBA layer, to lie over the objects."""
    if count == 0:
        return None
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    for _ in range(count):
        shape = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        _shape(ImageDraw.Draw(shape), rng, size)
        layer.alpha_composite(shape)
    return layer
