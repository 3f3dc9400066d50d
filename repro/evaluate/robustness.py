"""Table 7's evaluators: FGSM, ImageNet-C, ImageNet-A, the backgrounds challenge, and the rendition shift
(ImageNet-R's analogue). Each set is read in its released folder layout: at paper scale from the folder the config
names, at embedded scale from the world's analogue (`repro.world.robustness`), a cached run built first.

An evaluator's `source` is a folder (a path), the spec of the run that writes the folder, or None: the set's own
folder under the data root (the world's `rendition/`).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from repro.data.datasets import EvalImages, eval_batches
from repro.data.folders import image_folder
from repro.data.transforms import EvalView, read_image
from repro.evaluate.classification import predict_logits
from repro.evaluate.corruptions import CORRUPTIONS, SEVERITIES, corruption_errors
from repro.evaluate.evaluators import Evaluator, named_eval_set, register_evaluator
from repro.evaluate.set_classes import SetClasses, set_classes
from repro.imagefiles import collate_readable
from repro.models import unwrap
from repro.specs import Spec, digest_path, is_spec_json

SET_FOLDER = "images"  # inside the run of a set built from the world
BACKGROUNDS_VARIANTS = ("original", "mixed_same", "mixed_rand", "only_bg_t", "fg_mask")  # ImageNet-9's, all read
SET_VARIANTS = {"backgrounds": tuple(f"{variant}/val" for variant in BACKGROUNDS_VARIANTS),  # what a root must hold
                "imagenet_c": tuple(f"{name}/{severity}" for name in CORRUPTIONS for severity in SEVERITIES)}


# images of the released sets that a folder read whole must hold: ImageNet-A 7,500, ImageNet-R 30,000, and
# ImageNet-9's val (each variant and the masks) 4,050; fewer is a part-unpacked archive, scored on what it holds
RELEASED_IMAGES = {"imagenet_a": 7_500, "rendition": 30_000, "backgrounds": 4_050}


def missing_variants(kind: str, root: Path) -> list[Path]:
    """The folders a released set of evaluator `kind` must hold under `root` and does not (`SET_VARIANTS`)."""
    return [Path(root, sub) for sub in SET_VARIANTS.get(kind, ()) if not Path(root, sub).is_dir()]


def classes_folder(kind: str, root: Path) -> Path:
    """The folder whose class folders name a released set's classes (every variant of the set shares them)."""
    return root / SET_VARIANTS[kind][0] if kind in SET_VARIANTS else root


def set_folder(source, default: Path, resources, what: str) -> Path:
    """The folder of a robustness set (see the module's docstring)."""
    if is_spec_json(source):
        from repro.runs import cached

        return cached(Spec.from_json(source), resources).dir / SET_FOLDER
    folder = Path(digest_path(source)) if source else default
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}: no folder {folder}: set robustness.{what}_root to the released set")
    return folder


def class_folder_top1(model: nn.Module, folder: Path, wnids, view, resources, crop_pct: float | None = None,
                      classes: SetClasses | None = None, images=None) -> tuple[float, int, np.ndarray]:
    """Top-1 (%) on `folder`/<class>/<image>, a prediction counted by the set's classes (`classes`, by default
    those of the folder: the logits restricted to the classes it holds, or ImageNet-9's super-classes); returns it,
    the image count and the per-image hits. `crop_pct` overrides the view's (1.0: the whole image); `images`, the
    folder's listing where the caller has it."""
    classes = classes or set_classes(folder, wnids)
    images = images if images is not None else image_folder(folder.parent, folder.name, classes.names)
    if not len(images):
        raise FileNotFoundError(f"no images under {folder}")
    logits = predict_logits(model, images, size=int(view["size"]), crop_pct=float(crop_pct or view["crop_pct"]),
                            batch_size=resources.batch_size_eval, workers=resources.workers,
                            amp=bool(view.get("amp", False)), channels_last=bool(view.get("channels_last")))
    hits = classes.predict(logits) == images.labels
    return 100.0 * float(hits.mean()), len(images), hits


@register_evaluator
class FGSM(Evaluator):
    """Top-1 under the fast gradient sign method (Goodfellow et al.): one step of `epsilon`/255 along the sign of
    the loss's gradient in pixel space, clipped to [0, 1], then normalised; also at each of `epsilons`.

    No published source here gives the paper's epsilon; 8/255 is the usual one-step budget on ImageNet, and the
    sweep shows how much the verdict depends on it."""
    type = "fgsm"
    defaults = {"epsilon": 8, "epsilons": [0, 1, 2, 4, 8]}

    def evaluate(self, model, data, view, resources):
        val = named_eval_set(data, "imagenet").images
        epsilons = sorted({float(e) for e in self.options["epsilons"]} | {float(self.options["epsilon"])})
        top1 = fgsm_top1(model, val, epsilons, view, resources)
        metrics = {"fgsm_top1": top1[float(self.options["epsilon"])], "fgsm_images": len(val)}
        metrics.update({f"fgsm_top1_eps{e:g}": value for e, value in top1.items()})
        return metrics


FGSM_CHUNK = 64  # images whose input gradient is taken at once: a ResNet-50's fp32 graph at 224 px is ~6 GB


def fgsm_top1(model: nn.Module, images, epsilons: list[float], view, resources) -> dict[float, float]:
    """Top-1 (%) of `model` on `images` attacked at each epsilon (in 1/255); the model is used in eval mode, and
    only the input's gradient is taken (no parameter gradient is left behind). Under torch.distributed each rank
    attacks its shard and the counts are summed."""
    import torch.distributed as dist

    model = unwrap(model).eval()
    device = next(model.parameters()).device
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    view_fn = EvalView(int(view["size"]), float(view["crop_pct"]), normalized=False)
    shard = Subset(EvalImages(images, view_fn), range(rank, len(images), world))
    loader = DataLoader(shard, batch_size=resources.batch_size_eval, num_workers=resources.workers,
                        collate_fn=collate_readable)
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in view_fn.mean_std)
    correct = torch.zeros(len(epsilons), dtype=torch.float64)
    for batch, batch_labels, _ in eval_batches(loader):
        # the gradient's graph is a training step's memory: taken FGSM_CHUNK images at a time, so an evaluation
        # batch sized for inference does not run out of memory after the students trained. Each image's gradient
        # is its own in eval mode; scaled by the whole batch, as the batch's mean loss scaled it
        for pixels, labels in zip(batch.split(FGSM_CHUNK), batch_labels.split(FGSM_CHUNK)):
            pixels, labels = pixels.to(device), labels.to(device)
            pixels.requires_grad_(True)
            loss = F.cross_entropy(model((pixels - mean) / std), labels, reduction="sum") / len(batch)
            (gradient,) = torch.autograd.grad(loss, pixels)
            with torch.no_grad():
                for k, epsilon in enumerate(epsilons):
                    attacked = (pixels + epsilon / 255.0 * gradient.sign()).clamp(0, 1)
                    correct[k] += (model((attacked - mean) / std).argmax(dim=1) == labels).sum().item()
    if world > 1:
        correct = correct.to(device)
        dist.all_reduce(correct)
    return {epsilon: 100.0 * float(c) / len(images) for epsilon, c in zip(epsilons, correct.cpu())}


@register_evaluator
class ImageNetC(Evaluator):
    """ImageNet-C (Hendrycks and Dietterich): top-1 on each of the 15 corruptions at 5 severities, their mean,
    and mCE normalised by AlexNet's errors (`repro.evaluate.corruptions`), from <source>/<corruption>/<severity>/."""
    type = "imagenet_c"
    defaults = {"source": None}

    def evaluate(self, model, data, view, resources):
        root = set_folder(self.options["source"], data.root / "imagenet-c", resources, "imagenet_c")
        missing = missing_variants(self.type, root)
        if missing:
            raise FileNotFoundError(f"ImageNet-C: no folder {missing[0]}: the set needs all 15 corruptions x 5 "
                                    f"severities")
        classes = set_classes(classes_folder(self.type, root), data.wnids)
        listed = {(name, severity): image_folder(root / name, str(severity), classes.names)
                  for name in CORRUPTIONS for severity in SEVERITIES}
        sizes = {key: len(images) for key, images in listed.items()}
        short = min(sizes, key=sizes.get)
        if sizes[short] < max(sizes.values()):  # a part-unpacked tar would be scored on fewer images, unseen
            raise ValueError(f"ImageNet-C: {root.joinpath(short[0], str(short[1]))} holds {sizes[short]} images, "
                             f"other folders {max(sizes.values())}: unpack its tar again")
        top1 = {(name, severity): class_folder_top1(model, root / name / str(severity), data.wnids, view, resources,
                                                    classes=classes, images=images)[0]
                for (name, severity), images in listed.items()}
        return {**corruption_errors(top1), "imagenet_c_images": sum(sizes.values())}


@register_evaluator
class ImageNetA(Evaluator):
    """ImageNet-A (natural adversarial examples, Hendrycks et al.): top-1 over the classes the set holds."""
    type = "imagenet_a"
    defaults = {"source": None}

    def evaluate(self, model, data, view, resources):
        folder = set_folder(self.options["source"], data.root / "imagenet-a", resources, "imagenet_a")
        top1, count, _ = class_folder_top1(model, folder, data.wnids, view, resources)
        return {"imagenet_a_top1": top1, "imagenet_a_images": count}


def world_rendition_problem(world_root: Path) -> str | None:
    """Why the world built at `world_root` cannot be scored on its rendition set although it could be: it was built
    before the Noto Color Emoji font was installed (None where it has the set, or the font is still missing)."""
    from repro.world.glyphs import noto_font_path

    stats = world_root / "stats.json"
    if (world_root / "rendition").is_dir() or not stats.exists() or noto_font_path() is None:
        return None
    if "not installed" not in json.loads(stats.read_text())["rendition"].get("reason", ""):
        return None
    return (f"the world at {world_root} was built before Noto Color Emoji was installed, so it has no rendition/: "
            f"move that folder away and rerun to rebuild it with the set (its other files come out byte-identical, "
            f"so every cached run stays valid)")


@register_evaluator
class Rendition(Evaluator):
    """The rendition shift (ImageNet-R at paper scale, the world's glyphs drawn by another font at embedded
    scale): top-1 over the classes the set holds."""
    type = "rendition"
    defaults = {"source": None}

    def evaluate(self, model, data, view, resources):
        if self.options["source"] is None and not (data.root / "rendition").is_dir():
            from repro.notices import warn_once

            problem = world_rendition_problem(data.root)
            if problem:  # an empty result cached now would stay
                raise FileNotFoundError(problem)
            warn_once(f"no rendition/ in the world at {data.root} (built without the Noto Color Emoji font, "
                      f"fonts-noto-color-emoji): the rendition column stays empty")
            return {"rendition_images": 0}
        folder = set_folder(self.options["source"], data.root / "rendition", resources, "rendition")
        top1, count, _ = class_folder_top1(model, folder, data.wnids, view, resources)
        return {"rendition_top1": top1, "rendition_images": count}


@register_evaluator
class Backgrounds(Evaluator):
    """The backgrounds challenge (Xiao et al., "Noise or Signal"), read in ImageNet-9's released layout
    `<source>/<variant>/val/<class>/<image>`: top-1 on `original`, on `mixed_same` and `mixed_rand` (each foreground
    on a background of its own class or of another) and their gap; and the challenge (`bcg_top1`): the share of
    the foregrounds `fg_mask/val/<class>/<name>.npy` (of `original/val/<class>/<name>.JPEG`) classified right on
    every background of `only_bg_t` tried, all of them (the release's protocol) or a fixed sample of
    `challenge_backgrounds` drawn with `seed`. Images are scored whole (crop_pct 1), as the release scores them."""
    type = "backgrounds"
    defaults = {"source": None, "challenge_backgrounds": None, "seed": 0}

    def evaluate(self, model, data, view, resources):
        root = set_folder(self.options["source"], data.root / "backgrounds", resources, "backgrounds")
        missing = missing_variants(self.type, root)
        if missing:
            raise FileNotFoundError(f"backgrounds: no folder {missing[0]}: the set needs ImageNet-9's variants "
                                    f"{', '.join(BACKGROUNDS_VARIANTS)}, each as <variant>/val/<class>/")
        classes = set_classes(root / "original" / "val", data.wnids)  # every variant: the original's classes
        metrics = {}
        for variant in ("original", "mixed_same", "mixed_rand"):
            folder = root / variant / "val"
            metrics[f"{variant}_top1"], metrics[f"{variant}_images"], _ = class_folder_top1(
                model, folder, data.wnids, view, resources, crop_pct=1.0, classes=classes)
        challenge = backgrounds_challenge(model, root, classes, view, resources, self.options["challenge_backgrounds"],
                                          int(self.options["seed"]))
        return {**metrics, **challenge, "bg_gap": metrics["mixed_same_top1"] - metrics["mixed_rand_top1"]}


def backgrounds_challenge(model: nn.Module, root: Path, classes: SetClasses, view, resources,
                          backgrounds: int | None, seed: int) -> dict:
    """The challenge: each foreground (the mask's pixels of its original image) composited on each background in
    turn, at the images' own resolution, then given the eval view; a foreground counts as vulnerable at its first
    misclassified composite. Under torch.distributed each rank takes a share of the foregrounds."""
    import torch.distributed as dist

    model = unwrap(model).eval()
    device = next(model.parameters()).device
    masks = sorted((root / "fg_mask" / "val").glob("*/*.npy"))
    if not masks:
        raise FileNotFoundError(f"backgrounds: no foreground masks {root / 'fg_mask' / 'val'}/<class>/<name>.npy")
    pool = image_folder(root / "only_bg_t", "val", classes.names)
    chosen = np.arange(len(pool))
    if backgrounds is not None and int(backgrounds) < len(pool):
        chosen = np.sort(np.random.default_rng(seed).choice(len(pool), int(backgrounds), replace=False))
    tiles = [read_image(pool.path(int(i))) for i in chosen]  # kept as uint8: ImageNet-9's 4,050 take 0.6 GB
    odd = next((int(i) for i, tile in zip(chosen, tiles) if tile.shape != tiles[0].shape), None)
    if odd is not None:
        raise ValueError(f"{pool.path(odd)}: {tuple(tiles[0].shape[1:])} expected, as the other backgrounds; the "
                         f"challenge composites images of one size")
    tiles = torch.stack(tiles)
    view_fn = EvalView(int(view["size"]), 1.0)
    label_of = {name: k for k, name in enumerate(classes.names)}
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    survived = torch.zeros(1, dtype=torch.float64)
    for path in tqdm(masks[rank::world], desc="backgrounds challenge", disable=rank != 0, dynamic_ncols=True):
        label = label_of.get(path.parent.name)
        if label is None:
            raise ValueError(f"{path}: class folder {path.parent.name!r} is not one of {root / 'original' / 'val'}'s")
        image = read_image(root / "original" / "val" / path.parent.name / f"{path.stem}.JPEG")
        mask = torch.from_numpy(np.load(path) > 0)
        if mask.shape != image.shape[1:] or image.shape != tiles.shape[1:]:
            raise ValueError(f"{path}: mask {tuple(mask.shape)}, image {tuple(image.shape[1:])} and backgrounds "
                             f"{tuple(tiles.shape[2:])} differ in size: the challenge composites them pixel for pixel")
        survived += all(_all_right(model, view_fn(torch.where(mask, image, batch)), label, classes, view, device)
                        for batch in tiles.split(resources.batch_size_eval))
    if world > 1:
        survived = survived.to(device)
        dist.all_reduce(survived)
    return {"bcg_top1": 100.0 * float(survived.item()) / len(masks), "challenge_foregrounds": len(masks),
            "challenge_backgrounds": len(chosen)}


@torch.no_grad()
def _all_right(model, batch: torch.Tensor, label: int, classes: SetClasses, view, device) -> bool:
    batch = batch.to(device)
    if view.get("channels_last"):
        batch = batch.contiguous(memory_format=torch.channels_last)
    # fp32 whatever the view's amp, as the challenge's own evaluation: a foreground must be right on every
    # background, so reduced precision's flips at near-ties would only ever lower the score
    logits = model(batch).float().cpu()
    return bool((classes.predict(logits) == label).all())
