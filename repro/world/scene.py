"""One scene: a background, clutter behind and in front, and glyph objects composited in depth order.

Every object keeps its coverage, the share of each pixel's final colour that it contributes; a pixel belongs to the
object's visible mask when that share is at least one half. Occlusion by later layers and truncation at the image
border therefore shrink the mask exactly as they hide the object, and visibility is the visible mask's area over
the area the whole, unoccluded object would have. Pixels are composited by Pillow; only coverages are numpy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from repro.world.backgrounds import background, clutter_layer, draw_clutter

PLACEMENT_ATTEMPTS = 8
MASK_COVERAGE = 0.5
SMALLEST_LEVEL = 8


def glyph_pyramid(glyph: np.ndarray) -> tuple[Image.Image, ...]:
    """The glyph premultiplied (RGBa) at full, half, quarter, ... size: any scale is then one step of at most 2x."""
    levels = [Image.fromarray(glyph, "RGBA").convert("RGBa")]
    while max(levels[-1].size) >= 2 * SMALLEST_LEVEL:
        levels.append(levels[-1].reduce(2))
    return tuple(levels)


@dataclass
class Wanted:
    """An object to place: its class, glyph pyramid, longest side in pixels, and depth (higher is in front)."""
    class_index: int
    glyph: tuple[Image.Image, ...]
    longest: float
    depth: float
    primary: bool = False


@dataclass
class Placed:
    class_index: int
    primary: bool
    patch: Image.Image     # the transformed glyph, RGBA
    x0: int                # top-left corner on the canvas (may lie outside it)
    y0: int
    full_area: int         # pixels with alpha >= one half before truncation and occlusion
    coverage: np.ndarray   # size x size, float

    @property
    def mask(self) -> np.ndarray:
        return self.coverage >= MASK_COVERAGE

    @property
    def visible(self) -> float:
        return np.count_nonzero(self.mask) / max(self.full_area, 1)


def _jitter_matrix(brightness: float, saturation: float) -> tuple[float, ...]:
    """RGB -> RGB matrix that scales saturation about the grey value, then brightness."""
    rows = []
    for r in range(3):
        rows += [brightness * ((saturation if c == r else 0.0) + (1 - saturation) / 3) for c in range(3)] + [0.0]
    return tuple(rows)


def object_patch(pyramid: tuple[Image.Image, ...], longest: float, rng: np.random.Generator,
                 scene: dict) -> Image.Image:
    """The glyph flipped or not, scaled to `longest` pixels, rotated (one affine resampling) and colour-jittered."""
    level = next((im for im in reversed(pyramid) if max(im.size) >= longest), pyramid[0])
    w, h = level.size
    scale = longest / max(w, h)
    flip = -1.0 if rng.random() < 0.5 else 1.0
    angle = math.radians(rng.uniform(-scene["rotation_deg"], scene["rotation_deg"]))
    cos, sin = math.cos(angle), math.sin(angle)
    out_w = max(1, math.ceil(abs(w * cos) * scale + abs(h * sin) * scale))
    out_h = max(1, math.ceil(abs(w * sin) * scale + abs(h * cos) * scale))
    # output pixel -> input pixel: about the centres, rotate back, unscale, mirror
    a, b, d, e = flip * cos / scale, flip * sin / scale, -sin / scale, cos / scale
    c, f = w / 2 - a * out_w / 2 - b * out_h / 2, h / 2 - d * out_w / 2 - e * out_h / 2
    patch = level.transform((out_w, out_h), Image.Transform.AFFINE, (a, b, c, d, e, f),
                            Image.Resampling.BILINEAR).convert("RGBA")
    jitter = scene["color_jitter"]
    brightness, saturation = rng.uniform(1 - jitter, 1 + jitter, size=2)
    rgb = patch.convert("RGB").convert("RGB", matrix=_jitter_matrix(brightness, saturation))
    return Image.merge("RGBA", (*rgb.split(), patch.getchannel("A")))


def _position(rng: np.random.Generator, extent: int, size: int, truncation: float) -> int:
    """Top-left coordinate: the object may stick out of the image by up to `truncation` of its extent."""
    low, high = extent / 2 - truncation * extent, size - extent / 2 + truncation * extent
    centre = rng.uniform(min(low, high), max(low, high))
    return int(round(centre - extent / 2))


def paste(canvas: Image.Image, layer: Image.Image, x0: int, y0: int, covered: list[np.ndarray]) -> np.ndarray:
    """Composite an RGBA layer onto canvas at (x0, y0), thinning what lies below; returns its own coverage."""
    size = canvas.width
    own = np.zeros((size, size), dtype=np.float32)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + layer.width, size), min(y0 + layer.height, size)
    if cx0 >= cx1 or cy0 >= cy1:
        return own
    part = layer.crop((cx0 - x0, cy0 - y0, cx1 - x0, cy1 - y0))
    canvas.alpha_composite(part, (cx0, cy0))
    alpha = np.asarray(part.getchannel("A"), dtype=np.float32) / 255
    for coverage in covered:
        coverage[cy0:cy1, cx0:cx1] *= 1 - alpha
    own[cy0:cy1, cx0:cx1] = alpha
    return own


def background_layer(rng: np.random.Generator, size: int, scene: dict, sources) -> tuple[Image.Image, int]:
    """The scene's background with the clutter drawn behind the objects (the first draws of its random stream),
    and the number of clutter shapes to draw in front of them."""
    backdrop = background(rng, sources, size, scene)
    n_clutter = int(rng.poisson(scene["clutter"]))
    n_front = int((rng.random(n_clutter) < scene["p_clutter_front"]).sum())
    draw_clutter(rng, backdrop, n_clutter - n_front)
    return backdrop, n_front


def draw_scene(rng: np.random.Generator, size: int, scene: dict, sources, wanted: list[Wanted],
               min_visible_primary: float = 0.0) -> tuple[Image.Image, list[Placed]]:
    """The RGB image and the placed objects, in the order of `wanted`.

    Placements are redrawn until the primary object shows at least `min_visible_primary` of itself; the last
    attempt leaves out what would cover it (objects in front of it and front clutter), so the requirement holds
    but for truncation at the border.
    """
    backdrop, n_front = background_layer(rng, size, scene, sources)
    front_clutter = clutter_layer(rng, size, n_front)
    base = backdrop.convert("RGBA")
    patches = [object_patch(w.glyph, w.longest, rng, scene) for w in wanted]
    full_areas = [np.count_nonzero(np.asarray(p.getchannel("A")) >= 128) for p in patches]
    primary_depth = next((w.depth for w in wanted if w.primary), None)
    for attempt in range(PLACEMENT_ATTEMPTS):
        clear_primary = primary_depth is not None and attempt == PLACEMENT_ATTEMPTS - 1
        corners = [(_position(rng, p.width, size, scene["max_truncation"]),
                    _position(rng, p.height, size, scene["max_truncation"])) for p in patches]
        canvas = base.copy()
        placed: dict[int, Placed] = {}
        for i in sorted(range(len(wanted)), key=lambda i: wanted[i].depth):  # stable: equal depths keep order
            if clear_primary and wanted[i].depth > primary_depth:
                continue
            (x0, y0), w = corners[i], wanted[i]
            own = paste(canvas, patches[i], x0, y0, [p.coverage for p in placed.values()])
            placed[i] = Placed(w.class_index, w.primary, patches[i], x0, y0, full_areas[i], own)
        if front_clutter is not None and not clear_primary:
            paste(canvas, front_clutter, 0, 0, [p.coverage for p in placed.values()])
        primary = next((p for p in placed.values() if p.primary), None)
        if primary is None or primary.visible >= min_visible_primary:
            break
    image = canvas.convert("RGB")
    if rng.random() < scene["p_blur"]:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*scene["blur_sigma"])))
    return image, [placed[i] for i in sorted(placed)]
