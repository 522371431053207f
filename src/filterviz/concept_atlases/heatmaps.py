"""Where each concept fires: its code at every collected position of the photo holding its strongest
vector, laid over that photo.

The maps come from the vectors already collected (no second pass through the network): one read of the
shards keeps the vectors of the few photos needed. Where the vectors were sampled (``positions``), the
positions not collected show as not firing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from filterviz.concept_atlases.measures import BLOCK, encoded
from filterviz.concept_atlases.shards import InMemory
from filterviz.core import dictionaries as dl

DIM = 0.2
"""How bright the photo stays where the concept does not fire: a spotlight reads on any photo, where a
coloured layer is lost on photos of that colour."""


def concept_maps(
    dictionary: dl.Dictionary, weights: dl.Weights, source: InMemory, top: np.ndarray
) -> dict[int, tuple[int, np.ndarray]]:
    """For each concept ``k`` that fired (``top [K, n]``, its strongest vectors, -1 for none), the image
    of its strongest vector and the concept's codes ``float32[h, w]`` over that image's positions."""
    strongest = {k: int(row[0]) for k, row in enumerate(top) if row[0] >= 0}
    image_of = {k: int(source.places(np.array([v]))[0, 0]) for k, v in strongest.items()}
    wanted = np.array(sorted(set(image_of.values())), np.int64)
    kept_places, kept_codes = [], []
    for first, vectors in source.blocks(BLOCK):
        places = source.places(np.arange(first, first + len(vectors)))
        mine = np.isin(places[:, 0], wanted)
        if mine.any():  # the whole block is encoded: one compiled shape for every block
            kept_places.append(places[mine])
            kept_codes.append(encoded(dictionary, weights, vectors)[mine])
    if not kept_places:
        return {}
    places, codes = np.concatenate(kept_places), np.concatenate(kept_codes)
    maps = {}
    for k, image in image_of.items():
        here = places[:, 0] == image
        rows, columns = places[here, 1], places[here, 2]
        grid = np.zeros((rows.max() + 1, columns.max() + 1), np.float32)
        grid[rows, columns] = codes[here, k]
        maps[k] = (image, grid)
    return maps


def heatmap(photo: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``uint8[H, W, 3]``: the ``photo`` lit by the concept's codes ``grid [h, w]``: full brightness where
    the code is highest, :data:`DIM` where it is zero, smoothly between (bilinear)."""
    from PIL import Image

    height, width = photo.shape[:2]
    strength = (grid / max(float(grid.max()), 1e-12)).astype(np.float32)
    light = np.asarray(Image.fromarray(strength).resize((width, height), Image.Resampling.BILINEAR))
    return np.clip(photo * (DIM + (1 - DIM) * light[..., None]), 0, 255).astype(np.uint8)


def heatmap_path(concept: int) -> Path:
    """Where a concept's heatmap is kept in the output folder."""
    return Path("heatmaps") / f"concept-{concept}.png"
