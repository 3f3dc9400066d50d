"""The embedded world: a generated multi-object image world with exact ground truth, written in ImageNet's layouts.

`build_world(params, out_dir)` writes one; `repro.steps.ensure_world(params, runs_root)` builds it once into the run
cache and returns its folder. Imported lazily, so that repro.config can read repro.world.params without loading the generator.
"""
from __future__ import annotations

__all__ = ["build_world"]


def __getattr__(name: str):
    if name in __all__:
        from repro.world import build

        return getattr(build, name)
    raise AttributeError(f"module 'repro.world' has no attribute {name!r}")
