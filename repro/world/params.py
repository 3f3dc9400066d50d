"""The world's parameters: one dict, hashed into the world's cache key. Profiles change sizes only."""
from __future__ import annotations

import copy

# Filled in by the world generator's authors; sizes per profile below.
DEFAULTS: dict = {
    "seed": 0,
    "image_size": 96,
}

SIZES = {
    "smoke": {"n_train": 600, "n_extra": 600, "n_val": 300},
    "proxy": {"n_train": 12000, "n_extra": 24000, "n_val": 5000},
    "paper": None,
}


def world_params(profile: str) -> dict | None:
    sizes = SIZES[profile]
    if sizes is None:
        return None
    return {**copy.deepcopy(DEFAULTS), **sizes}
