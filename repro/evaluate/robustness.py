"""Table 7's evaluators: FGSM, ImageNet-C, ImageNet-A, the backgrounds challenge, and the rendition shift
(ImageNet-R's analogue). Each set is read in its released folder layout: at paper scale from the folder the config
names, at embedded scale from the world's analogue (`repro.world.robustness`), a cached run built first.

An evaluator's `source` is a folder (a path), the spec of the run that writes the folder, or None: the set's own
folder under the data root (the world's `rendition/`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from repro.data.datasets import EvalImages
from repro.data.folders import image_folder
from repro.data.transforms import EvalView
from repro.evaluate.classification import predict_logits
from repro.evaluate.corruptions import CORRUPTIONS, SEVERITIES, corruption_errors
from repro.evaluate.evaluators import Evaluator, named_eval_set, register_evaluator
from repro.models import unwrap
from repro.specs import Spec, digest_path, is_spec_json

SET_FOLDER = "images"  # inside the run of a set built from the world


def set_folder(source, default: Path, resources, what: str) -> Path:
    """The folder of a robustness set (see the module's docstring)."""
    if is_spec_json(source):
        from repro.runs import cached

        return cached(Spec.from_json(source), resources).dir / SET_FOLDER
    folder = Path(digest_path(source)) if source else default
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}: no folder {folder}: set robustness.{what}_root to the released set")
    return folder


def class_folder_top1(model: nn.Module, folder: Path, wnids, view, resources) -> tuple[float, int, np.ndarray]:
    """Top-1 (%) on `folder`/<wnid>/<image>, the logits restricted to the classes the folder holds (ImageNet-A's
    and ImageNet-R's 200-class protocol); returns it, the image count and the per-image hits."""
    images = image_folder(folder.parent, folder.name, wnids)
    if not len(images):
        raise FileNotFoundError(f"no images under {folder}")
    logits = predict_logits(model, images, size=int(view["size"]), crop_pct=float(view["crop_pct"]),
                            batch_size=resources.batch_size_eval, workers=resources.workers,
                            amp=bool(view.get("amp", False)), channels_last=bool(view.get("channels_last")))
    present = np.unique(images.labels)
    predicted = present[logits[:, torch.as_tensor(present)].argmax(dim=1).numpy()]
    hits = predicted == images.labels
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
    loader = DataLoader(shard, batch_size=resources.batch_size_eval, num_workers=resources.workers)
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in view_fn.mean_std)
    correct = torch.zeros(len(epsilons), dtype=torch.float64)
    for pixels, labels, _ in loader:
        pixels, labels = pixels.to(device), labels.to(device)
        pixels.requires_grad_(True)
        loss = F.cross_entropy(model((pixels - mean) / std), labels)
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
        top1, images = {}, 0
        for name in CORRUPTIONS:
            for severity in SEVERITIES:
                folder = root / name / str(severity)
                if not folder.is_dir():
                    raise FileNotFoundError(f"ImageNet-C: no folder {folder}: the set needs all 15 corruptions x 5 "
                                            f"severities")
                top1[(name, severity)], count, _ = class_folder_top1(model, folder, data.wnids, view, resources)
                images += count
        return {**corruption_errors(top1), "imagenet_c_images": images}


@register_evaluator
class ImageNetA(Evaluator):
    """ImageNet-A (natural adversarial examples, Hendrycks et al.): top-1 over the classes the set holds."""
    type = "imagenet_a"
    defaults = {"source": None}

    def evaluate(self, model, data, view, resources):
        folder = set_folder(self.options["source"], data.root / "imagenet-a", resources, "imagenet_a")
        top1, count, _ = class_folder_top1(model, folder, data.wnids, view, resources)
        return {"imagenet_a_top1": top1, "imagenet_a_images": count}


@register_evaluator
class Rendition(Evaluator):
    """The rendition shift (ImageNet-R at paper scale, the world's glyphs drawn by another font at embedded
    scale): top-1 over the classes the set holds."""
    type = "rendition"
    defaults = {"source": None}

    def evaluate(self, model, data, view, resources):
        if self.options["source"] is None and not (data.root / "rendition").is_dir():
            from repro.notices import warn_once

            warn_once(f"no rendition/ in the world at {data.root} (built without the Noto Color Emoji font, "
                      f"fonts-noto-color-emoji): the rendition column stays empty")
            return {"rendition_images": 0}
        folder = set_folder(self.options["source"], data.root / "rendition", resources, "rendition")
        top1, count, _ = class_folder_top1(model, folder, data.wnids, view, resources)
        return {"rendition_top1": top1, "rendition_images": count}


@register_evaluator
class Backgrounds(Evaluator):
    """The backgrounds challenge (Xiao et al., "Noise or Signal"): top-1 with each foreground on a background of
    its own class (mixed_same) and of another (mixed_rand), their gap, and the challenge: the share of foregrounds
    classified right on every background of other classes tried (<source>/challenge/<k>/)."""
    type = "backgrounds"
    defaults = {"source": None}

    def evaluate(self, model, data, view, resources):
        root = set_folder(self.options["source"], data.root / "backgrounds", resources, "backgrounds")
        same, count, _ = class_folder_top1(model, root / "mixed_same", data.wnids, view, resources)
        rand, _, _ = class_folder_top1(model, root / "mixed_rand", data.wnids, view, resources)
        challenge = sorted((root / "challenge").iterdir(), key=lambda p: int(p.name))
        if not challenge:
            raise FileNotFoundError(f"backgrounds: no challenge/<k>/ folders under {root}")
        every = np.logical_and.reduce([class_folder_top1(model, folder, data.wnids, view, resources)[2]
                                       for folder in challenge])
        return {"bcg_top1": 100.0 * float(every.mean()), "mixed_same_top1": same, "mixed_rand_top1": rand,
                "bg_gap": same - rand, "backgrounds_images": count, "challenge_backgrounds": len(challenge)}
