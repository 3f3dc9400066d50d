"""The world's analogues of the robustness sets, each written in its released layout so one reader serves both
scales (docs/robustness.md):

- ImageNet-C: val images under the 15 corruptions x 5 severities, `<corruption>/<severity>/<wnid>/<file>`;
- the backgrounds challenge (ImageNet-9's variants, `<variant>/val/<wnid>/<file>`): each val image, its primary
  object's mask, its bare background (the backdrop and the clutter behind the objects), and the masked object on
  the bare background of another val image of its class (mixed_same) or of another class (mixed_rand); the
  challenge composites the masks on the bare backgrounds when it is scored;
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

from repro.world.parts import Assets, Part, bare_background, draw, image_path, label_of, wnid
from repro.world.params import SCENE

JPEG_QUALITY = 90  # the world's own


def val_subset(num_classes: int, n_val: int, per_class: int) -> list[int]:
    """The first `per_class` val images of each class (val classes take turns: image i is class i % classes)."""
    return [i for i in range(n_val) if i // num_classes < per_class]


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=JPEG_QUALITY)


def write_imagenet_c(world_root: Path, relpaths: Iterable[str], labels: Iterable[int], out: Path,
                     corruptions: Iterable[str], severities: Iterable[int], seed: int, size: int, crop_pct: float,
                     progress: bool = True) -> int:
    """The val images `relpaths` under every corruption and severity; returns the number of images written. As the
    release corrupts each val image's 224 x 224 centre crop (resized to 256 first), each image is cut to the
    students' eval view (`size`, `crop_pct`) before it is corrupted, and is scored whole."""
    from repro.data.transforms import EvalView, read_image
    from repro.evaluate.corruptions import corrupt

    view = EvalView(size, crop_pct)

    items = list(zip(relpaths, labels))
    jobs = [(name, severity) for name in corruptions for severity in severities]
    written = 0
    for name, severity in tqdm(jobs, desc="ImageNet-C analogue", disable=not progress, dynamic_ncols=True):
        for index, (relpath, label) in enumerate(items):
            target = out / name / str(severity) / wnid(label) / Path(relpath).name
            if target.exists():  # a rerun after a kill: the image is a function of (seed, name, severity, index)
                continue
            pixels = view.crop(read_image(world_root / relpath)).permute(1, 2, 0).numpy()
            image_seed = int(np.random.SeedSequence([seed, index, severity, sum(map(ord, name))]).generate_state(1)[0])
            _save(Image.fromarray(corrupt(pixels, name, severity, image_seed)), target)
            written += 1
    return written


def write_backgrounds(assets: Assets, world_root: Path, indices: list[int], out: Path, seed: int,
                      progress: bool = True) -> dict:
    """ImageNet-9's variants of the val images `indices`, each `<variant>/val/<wnid>/<file>`: original (the val
    image), fg_mask (its primary object's visible pixels, a 0/1 .npy), only_bg_t (its bare background), and
    mixed_same / mixed_rand (the original's masked pixels on the bare background of another val image of its class,
    or of a random other class). Returns counts."""
    import shutil

    part = Part("val", assets.params["n_val"], {key: assets.params[key] for key in SCENE})
    rng = np.random.default_rng([seed, 9])
    labels = {i: label_of(assets, "val", i) for i in indices}
    relpaths = {i: Path(image_path(assets, "val", i)) for i in indices}

    def variant(name: str, i: int) -> Path:
        return out / name / "val" / relpaths[i].parent.name / relpaths[i].name

    masks = {}
    for i in tqdm(indices, desc="backgrounds analogue", disable=not progress, dynamic_ncols=True):
        for name in ("original", "only_bg_t", "fg_mask"):
            variant(name, i).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(world_root / relpaths[i], variant("original", i))
        _, placed = draw(assets, part, i)
        masks[i] = next(p for p in placed if p.primary).mask
        np.save(variant("fg_mask", i).with_suffix(".npy"), masks[i].astype(np.uint8))
        _save(bare_background(assets, part, i), variant("only_bg_t", i))
    for i in indices:
        same = [j for j in indices if labels[j] == labels[i] and j != i] or [i]
        others = [j for j in indices if labels[j] != labels[i]]
        with Image.open(variant("original", i)) as image:
            foreground = np.asarray(image.convert("RGB"))
        for name, pool in (("mixed_same", same), ("mixed_rand", others)):
            with Image.open(variant("only_bg_t", pool[int(rng.integers(len(pool)))])) as image:
                background = np.asarray(image.convert("RGB"))
            _save(Image.fromarray(np.where(masks[i][..., None], foreground, background)), variant(name, i))
    return {"images": len(indices), "classes": len(set(labels.values()))}


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
