"""Warnings to the user on stderr, each message once per process (a dataset opened for every run warns once)."""
from __future__ import annotations

import sys

_warned: set[str] = set()


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr)
