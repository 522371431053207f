"""Grids of pictures with matplotlib, as the notebook draws them, and saving figures atomically."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from filterviz.io.files import FIGURE_FORMATS, atomic_write, check_writable, output_format


def filter_grid(
    pictures: np.ndarray,
    labels: Sequence[str] | None = None,
    *,
    columns: int = 10,
    title: str | None = None,
    cell_inches: float = 1.6,
):
    """A matplotlib Figure laying out ``uint8[N, H, W, 3]`` pictures in rows of ``columns``.

    Uses the object-oriented API only (no pyplot state), so it works headless and in threads.
    """
    from matplotlib.figure import Figure

    pictures = np.asarray(pictures)
    count = len(pictures)
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    # Each row gets room for its titles above its pictures; the constrained layout keeps every title
    # clear of the row above, whatever the column count.
    title_inches = 0.3 if labels is not None else 0.0
    figure = Figure(
        figsize=(columns * cell_inches, rows * (cell_inches + title_inches) + (0.5 if title else 0.0)),
        layout="constrained",
    )
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index < count:
            axis.imshow(pictures[index], interpolation="nearest")
            if labels is not None:
                axis.set_title(labels[index], fontsize=8, parse_math=False)
    if title:
        figure.suptitle(title, parse_math=False)
    return figure


def filter_labels(
    filters: Sequence[int] | np.ndarray, activations: Sequence[float] | np.ndarray
) -> list[str]:
    """``"filter 7: 12.3"`` per filter, with the mean activation it reached (``dead`` where it is 0)."""

    def shown(value: float) -> str:
        if not math.isfinite(value):
            return str(value)
        if value <= 0:
            return "dead"
        return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"

    return [
        f"filter {index}: {shown(float(value))}" for index, value in zip(filters, activations, strict=True)
    ]


def save_figure(figure, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Save a matplotlib Figure atomically (no partial file is ever left at ``path``), as the type its
    extension names: ``.png``, ``.jpg``, ``.pdf`` or ``.svg``; any other is an :class:`OutputError`."""
    kind = output_format(path, FIGURE_FORMATS)
    check_writable(path)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=kind, dpi=dpi)
    return atomic_write(path, buffer.getvalue())
