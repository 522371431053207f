"""The grid of an activation atlas, pure: which cell each laid-out vector falls in, each cell's mean
vector, count, majority class and purity, and the vectors nearest its mean.

An activation atlas (Carter et al., "Exploring Neural Networks with Activation Atlases", Distill 2019)
lays a layer's activation vectors out in 2-D, averages those that share a cell of an ``N x N`` grid
over the layout, and draws each cell's average by feature visualisation. Nothing here reads a file.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from filterviz.errors import SettingError


class Cells(NamedTuple):
    """The kept cells of one ``grid x grid`` grid, ``M`` of them, row-major order.

    Attributes:
      grid: cells per side.
      rows, columns: ``int[M]``, each cell's place (row 0 at the layout's smallest y).
      counts: ``int[M]``, vectors in each cell (at least the minimum count).
      means: ``float32[M, C]``, each cell's mean vector.
      members: one ``int[count]`` per cell: the indices of its vectors.
    """

    grid: int
    rows: np.ndarray
    columns: np.ndarray
    counts: np.ndarray
    means: np.ndarray
    members: list[np.ndarray]


def cell_of(layout: np.ndarray, grid: int) -> np.ndarray:
    """``int[N]`` row-major cell of each point of ``layout float[N, 2]`` (x, y) on a ``grid x grid``
    grid spanning the layout's bounding box (its maximum falls in the last cell)."""
    layout = np.asarray(layout, np.float64)
    low, high = layout.min(0), layout.max(0)
    spread = np.where(high > low, high - low, 1.0)
    place = np.clip(np.floor((layout - low) / spread * grid), 0, grid - 1).astype(np.int64)
    return place[:, 1] * grid + place[:, 0]


def grid_cells(vectors: np.ndarray, layout: np.ndarray, grid: int, min_count: int = 1) -> Cells:
    """The cells of a ``grid x grid`` grid over ``layout float[N, 2]`` holding at least ``min_count`` of
    ``vectors float[N, C]``, each with its mean. A grid where no cell holds that many is a
    :class:`SettingError` (too fine for the data)."""
    vectors = np.asarray(vectors, np.float64)
    # Only the occupied cells are kept track of, so memory follows the vectors, not the grid's area.
    occupied, inverse, counts = np.unique(cell_of(layout, grid), return_inverse=True, return_counts=True)
    kept = np.flatnonzero(counts >= min_count)
    if kept.size == 0:
        raise SettingError(
            f"a {grid}x{grid} grid is too fine for {len(vectors):,} vectors: no cell holds {min_count}; "
            "use a coarser grid, a lower minimum count or more images"
        )
    sums = np.zeros((len(occupied), vectors.shape[1]))
    np.add.at(sums, inverse, vectors)
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    return Cells(
        grid,
        occupied[kept] // grid,
        occupied[kept] % grid,
        counts[kept],
        (sums[kept] / counts[kept, None]).astype(np.float32),
        [members[cell] for cell in kept],
    )


def class_mix(labels: np.ndarray, cells: Cells, classes: int) -> np.ndarray:
    """``int[M, classes]``: how many vectors of each class (``labels int[N]``) each cell holds."""
    labels = np.asarray(labels)
    return np.stack([np.bincount(labels[members], minlength=classes) for members in cells.members])


def nearest_members(vectors: np.ndarray, cells: Cells, count: int) -> list[np.ndarray]:
    """Per cell, the indices of up to ``count`` of its vectors nearest its mean by cosine similarity,
    nearest first."""
    vectors = np.asarray(vectors, np.float64)
    nearest = []
    for mean, members in zip(cells.means, cells.members, strict=True):
        candidates = vectors[members]
        norms = np.linalg.norm(candidates, axis=1) * max(float(np.linalg.norm(mean)), 1e-30)
        similarity = candidates @ mean / np.maximum(norms, 1e-30)
        nearest.append(members[np.argsort(-similarity, kind="stable")[:count]])
    return nearest


LARGEST_GRID = 1024
"""Cells per side of the finest grid an atlas draws."""


def check_grid(grid: object) -> int:
    """``grid`` as a whole number of cells per side, 1 to :data:`LARGEST_GRID`."""
    if isinstance(grid, bool) or not isinstance(grid, int | np.integer) or not 1 <= grid <= LARGEST_GRID:
        raise SettingError(
            f"grid must be a whole number of cells per side from 1 to {LARGEST_GRID}, got {grid!r}"
        )
    return int(grid)
