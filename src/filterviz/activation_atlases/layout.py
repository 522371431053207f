"""An activation atlas's 2-D layout: its vectors laid out by UMAP (the ``atlas`` extra), seeded."""

from __future__ import annotations

import warnings
from types import ModuleType

import numpy as np

from filterviz.errors import SettingError

NEIGHBORS, MIN_DIST, METRIC = 15, 0.1, "cosine"
UMAP_SETTINGS: dict[str, object] = {"metric": METRIC, "neighbors": NEIGHBORS, "min_dist": MIN_DIST}
"""How vectors are laid out (recorded with each atlas)."""


def umap_layout(
    vectors: np.ndarray,
    *,
    seed: int,
    neighbors: int = NEIGHBORS,
    min_dist: float = MIN_DIST,
    metric: str = METRIC,
) -> np.ndarray:
    """``float32[N, 2]``: UMAP of ``vectors`` (McInnes et al. 2018), seeded, so a run is reproducible."""
    umap = require_umap()
    check_layout_size(len(vectors))
    vectors = np.asarray(vectors, np.float32)
    k = min(neighbors, len(vectors) - 1)
    given = {}
    if metric == "cosine" and len(vectors) <= EXACT_NEIGHBOURS:
        given["precomputed_knn"] = (*cosine_neighbours(vectors, k), None)
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=k,
        min_dist=min_dist,
        metric=metric,
        random_state=seed,
        init="random" if len(vectors) < 64 else "spectral",
        **given,
    )
    with warnings.catch_warnings():  # a seed makes UMAP run on one thread, and it says so each time
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]", category=UserWarning)
        return np.asarray(reducer.fit_transform(vectors), np.float32)


EXACT_NEIGHBOURS = 4096
"""Up to this many vectors, the neighbours are found here, exactly, as UMAP itself does below that
size; its own search is compiled by numba at its first use in each process, which takes seconds."""


def cosine_neighbours(vectors: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Each vector's ``k`` nearest by cosine distance, itself first: ``int64[N, k]`` indices and
    ``float32[N, k]`` distances. A zero vector is at distance 0 from another zero vector and 1 from the
    rest, as in UMAP's cosine."""
    norms = np.linalg.norm(vectors, axis=1)
    zero = norms == 0
    unit = vectors / np.where(zero, 1.0, norms)[:, None]
    indices, distances = [], []
    for begin in range(0, len(vectors), block):
        rows = np.arange(begin, min(begin + block, len(vectors)))
        distance = np.clip(1.0 - unit[rows] @ unit.T, 0.0, 2.0)
        distance[np.ix_(zero[rows], zero)] = 0.0
        distance[np.arange(len(rows)), rows] = -1.0  # itself first, whatever the ties
        nearest = np.argsort(distance, axis=1, kind="stable")[:, :k]
        found = np.take_along_axis(distance, nearest, axis=1)
        indices.append(nearest)
        distances.append(np.maximum(found, 0.0))
    return np.concatenate(indices), np.concatenate(distances).astype(np.float32)


def require_umap() -> ModuleType:
    # umap-learn, or what to install: asked before the collect pass, not after it.
    try:
        import umap
    except ImportError:
        raise SettingError(
            "the activation atlas lays vectors out with UMAP: pip install -e '.[atlas]' in filterviz's clone"
        ) from None
    return umap


def check_layout_size(count: int) -> None:
    if count < 4:
        raise SettingError(f"UMAP needs at least 4 vectors, got {count}: use more images or positions")
