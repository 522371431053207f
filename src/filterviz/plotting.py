"""Grids of filter pictures with matplotlib, as the notebook draws them, and saving them to PNG."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from filterviz.ascent import ascend, check_filters
from filterviz.images import FIGURE_FORMATS, as_image, atomic_write, check_writable, output_format
from filterviz.model import Params, layer_spec


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
    figure = Figure(figsize=(columns * cell_inches, rows * cell_inches + (0.5 if title else 0.0)))
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index < count:
            axis.imshow(pictures[index], interpolation="nearest")
            if labels is not None:
                axis.set_title(labels[index], fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def show_filters(
    params: Params,
    layer: str,
    image: jax.Array | np.ndarray,
    n: int = 20,
    *,
    filters: Sequence[int] | None = None,
    steps: int = 20,
    step_size: float = 1.0,
    columns: int = 10,
    batch_size: int | None = None,
):
    """The notebook's picture: ``n`` filters of ``layer`` (the first ``n``, or ``filters``) in a grid.

    One vmapped :func:`filterviz.ascend` call computes every picture from the start ``image``
    (``float32[H, W, 3]``). Returns a matplotlib Figure (2 rows of 10 for the default ``n=20``).
    """
    layer = layer_spec(layer).name
    chosen = check_filters(
        layer, filters if filters is not None else range(min(n, layer_spec(layer).channels))
    )
    pictures = as_image(
        ascend(params, layer, chosen, image, steps=steps, step_size=step_size, batch_size=batch_size)
    )
    return filter_grid(pictures, [f"filter {i}" for i in chosen], columns=columns, title=layer)


def save_figure(figure, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Save a matplotlib Figure atomically (no partial file is ever left at ``path``), as the type its
    extension names: ``.png``, ``.jpg``, ``.pdf`` or ``.svg``; any other is an :class:`OutputError`."""
    kind = output_format(path, FIGURE_FORMATS)
    check_writable(path)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=kind, dpi=dpi)
    return atomic_write(path, buffer.getvalue())
