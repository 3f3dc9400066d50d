"""ImageNet-C's 15 corruptions (Hendrycks and Dietterich) through the `imagecorruptions` package (1.1.2, the
`robustness` extra), made to run under current libraries and to be deterministic.

The package is used as published except for three places, patched here at import rather than copied:
`glass_blur` calls scikit-image's `gaussian(multichannel=True)` (now `channel_axis=-1`), `fog` uses `np.float_`
(gone in NumPy 2; `np.float64` is the same type), and `impulse_noise` draws from an unseeded generator (it is
given one). The other corruptions draw from NumPy's global generator, which `corrupt` seeds per image.
"""
from __future__ import annotations

import types
import warnings
from functools import lru_cache

import numpy as np

# the 15 corruptions of ImageNet-C's benchmark, in the order of Hendrycks and Dietterich's code
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression")
SEVERITIES = (1, 2, 3, 4, 5)
# AlexNet's top-1 error on each corruption, averaged over the severities: mCE's normaliser (from the benchmark's
# code, github.com/hendrycks/robustness, as AugMix's imagenet.py uses it)
ALEXNET_ERRORS = dict(zip(CORRUPTIONS, (0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360,
                                        0.866816, 0.826572, 0.819324, 0.564592, 0.853204, 0.646056, 0.717840,
                                        0.606500)))
IMPULSE_AMOUNTS = (0.03, 0.06, 0.09, 0.17, 0.27)  # imagecorruptions' impulse_noise, by severity


class _NumPy2(types.ModuleType):
    """NumPy as the package's module sees it, with the alias `np.float_` it still uses."""

    def __getattr__(self, name):
        return np.float64 if name == "float_" else getattr(np, name)


@lru_cache(maxsize=1)
def _package():
    """imagecorruptions, its corruption module patched (once per process)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pkg_resources' deprecation notice
            import imagecorruptions
            from imagecorruptions import corruptions
    except ImportError as error:
        raise ImportError(f"ImageNet-C needs the robustness extra: pip install -e '.[robustness]' ({error})") from None
    from skimage.filters import gaussian

    corruptions.np = _NumPy2("numpy")

    def gaussian_any(image, sigma=1, multichannel=None, **kwargs):
        if multichannel is not None:
            kwargs.setdefault("channel_axis", -1 if multichannel else None)
        return gaussian(image, sigma=sigma, **kwargs)

    corruptions.gaussian = gaussian_any
    return imagecorruptions


def corrupt(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """`image` (uint8 [H, W, 3]) with corruption `name` at `severity` (1-5), uint8; the same (image, seed) always
    gives the same output."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}: one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"corruption severity {severity} is not one of 1..5")
    if min(image.shape[:2]) < 32:  # imagecorruptions' own limit, met late and unnamed otherwise
        raise ValueError(f"the corruptions need images of at least 32 x 32 pixels, not {image.shape[1]} x "
                         f"{image.shape[0]} (the world's ImageNet-C analogue is cut to train.eval_size)")
    package = _package()
    if name == "impulse_noise":
        from skimage.util import random_noise

        noisy = random_noise(image / 255.0, mode="s&p", amount=IMPULSE_AMOUNTS[severity - 1],
                             rng=np.random.default_rng(seed))
        out = np.clip(noisy, 0, 1) * 255
    else:
        np.random.seed(seed % 2**32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = package.corrupt(image, severity, corruption_name=name)  # checks the image and its size
    return np.uint8(np.clip(np.asarray(out), 0, 255))


def corruption_errors(top1: dict[tuple[str, int], float]) -> dict:
    """From top-1 (%) per (corruption, severity): the mean top-1 over all of them, each corruption's CE (its
    error summed over the severities over AlexNet's, x100) and mCE (their mean)."""
    ce = {name: 100.0 * np.mean([1 - top1[(name, s)] / 100 for s in SEVERITIES]) / ALEXNET_ERRORS[name]
          for name in CORRUPTIONS}
    return {"imagenet_c_top1": float(np.mean(list(top1.values()))), "imagenet_c_mce": float(np.mean(list(ce.values()))),
            **{f"imagenet_c_ce_{name}": float(value) for name, value in ce.items()}}
