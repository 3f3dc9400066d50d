"""The world's analogues of the robustness sets, each written in its released layout so one reader serves both
scales (docs/robustness.md):

- ImageNet-C: val images under the 15 corruptions x 5 severities, `<corruption>/<severity>/<wnid>/<file>`;
- the backgrounds challenge (ImageNet-9's mixed-same / mixed-rand): each val image's primary object, as drawn,
  pasted on the bare background (its backdrop and the clutter behind the objects) of another val image of the
  same class, or of another class; and on `challenge_backgrounds` backgrounds of other classes for the challenge
  (a foreground counts only if it is classified right on all of them), `<variant>/<wnid>/<file>`;
- ImageNet-A's candidates: fresh draws of the val generator (their own random stream), `<wnid>/<file>`, of which
  the adversarial filter (`repro.steps`) keeps those an independent model misclassifies.

Every image is a function of the world's parameters, the set's options and its index, as in the world itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image
from tqdm import tqdm

from repro.world.parts import Assets, Part, bare_background, draw, label_of, wnid
from repro.world.params import SCENE
from repro.world.scene import paste

JPEG_QUALITY = 90  # the world's own


def val_subset(num_classes: int, n_val: int, per_class: int) -> list[int]:
    """The first `per_class` val images of each class (val classes take turns: image i is class i % classes)."""
    return [i for i in range(n_val) if i // num_classes < per_class]


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=JPEG_QUALITY)


def write_imagenet_c(world_root: Path, relpaths: Iterable[str], labels: Iterable[int], out: Path,
                     corruptions: Iterable[str], severities: Iterable[int], seed: int, progress: bool = True) -> int:
    """The val images `relpaths` under every corruption and severity; returns the number of images written."""
    from repro.evaluate.corruptions import corrupt

    items = list(zip(relpaths, labels))
    jobs = [(name, severity) for name in corruptions for severity in severities]
    written = 0
    for name, severity in tqdm(jobs, desc="ImageNet-C analogue", disable=not progress, dynamic_ncols=True):
        for index, (relpath, label) in enumerate(items):
            target = out / name / str(severity) / wnid(label) / Path(relpath).name
            if target.exists():  # a rerun after a kill: the image is a function of (seed, name, severity, index)
                continue
            with Image.open(world_root / relpath) as image:
                pixels = np.asarray(image.convert("RGB"))
            image_seed = int(np.random.SeedSequence([seed, index, severity, sum(map(ord, name))]).generate_state(1)[0])
            _save(Image.fromarray(corrupt(pixels, name, severity, image_seed)), target)
            written += 1
    return written


def _primary_layer(assets: Assets, part: Part, index: int):
    """(the primary object's patch and corner, the class) of image `index` of `part`."""
    _, placed = draw(assets, part, index)
    primary = next(p for p in placed if p.primary)
    return primary, primary.class_index


def _composite(background: Image.Image, primary) -> Image.Image:
    canvas = background.convert("RGBA")
    paste(canvas, primary.patch, primary.x0, primary.y0, [])
    return canvas.convert("RGB")


def write_backgrounds(assets: Assets, indices: list[int], out: Path, challenge_backgrounds: int, seed: int,
                      progress: bool = True) -> dict:
    """mixed_same/, mixed_rand/ and challenge/<k>/ composites of the val images `indices`; returns counts."""
    part = Part("val", assets.params["n_val"], {key: assets.params[key] for key in SCENE})
    num_classes = len(assets.classes)
    rng = np.random.default_rng([seed, 9])
    labels = {i: label_of(assets, "val", i) for i in indices}
    by_class: dict[int, list[int]] = {}
    for i in indices:
        by_class.setdefault(labels[i], []).append(i)
    backgrounds: dict[int, Image.Image] = {}

    def bare(i):
        if i not in backgrounds:
            backgrounds[i] = bare_background(assets, part, i)
        return backgrounds[i]

    for i in tqdm(indices, desc="backgrounds analogue", disable=not progress, dynamic_ncols=True):
        primary, label = _primary_layer(assets, part, i)
        same = [j for j in by_class[label] if j != i]
        others = [j for j in indices if labels[j] != label]
        name = f"{wnid(label)}/{i:06d}.JPEG"
        _save(_composite(bare(same[int(rng.integers(len(same)))] if same else i), primary),
              out / "mixed_same" / name)
        _save(_composite(bare(others[int(rng.integers(len(others)))]), primary), out / "mixed_rand" / name)
        for k, j in enumerate(rng.choice(others, size=min(challenge_backgrounds, len(others)), replace=False)):
            _save(_composite(bare(int(j)), primary), out / "challenge" / str(k) / name)
    return {"images": len(indices), "classes": num_classes, "challenge_backgrounds": challenge_backgrounds}


CANDIDATES_PART = "robustness/adversarial-candidates"


def write_candidates(assets: Assets, count: int, out: Path, progress: bool = True) -> list[tuple[str, int]]:
    """`count` fresh images of the val generator, classes taking turns; returns (relpath, label) of each."""
    scene = {key: assets.params[key] for key in SCENE}
    part = Part(CANDIDATES_PART, count, scene)
    written = []
    for index in tqdm(range(count), desc="ImageNet-A candidates", disable=not progress, dynamic_ncols=True):
        label = index % len(assets.classes)
        image, _ = draw(assets, part, index)
        relpath = f"{wnid(label)}/{index:06d}.JPEG"
        _save(image, out / relpath)
        written.append((relpath, label))
    return written
