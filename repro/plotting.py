"""Small helpers shared by the figure modules' plots: matplotlib without a display, and titles that fit."""
from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt", "wrapped_title"]


def wrapped_title(title: str, *lines: str, width: int = 80) -> str:
    """The experiment's title and any further lines, each broken into lines of at most `width` characters."""
    return "\n".join(textwrap.fill(line, width, break_on_hyphens=False) for line in (title, *lines))
