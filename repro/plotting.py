"""Small helpers shared by the figure modules' plots: matplotlib without a display, and titles that fit."""
from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt", "save_figure", "wrapped_title"]


def wrapped_title(title: str, *lines: str, width: int = 80) -> str:
    """The experiment's title and any further lines, each broken into lines of at most `width` characters."""
    return "\n".join(textwrap.fill(line, width, break_on_hyphens=False) for line in (title, *lines))


def save_figure(fig, path, title: str, width: int = 110, dpi: int = 130) -> None:
    """The figure under its wrapped title, laid out, written to `path` and closed."""
    fig.suptitle(wrapped_title(title, width=width), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
