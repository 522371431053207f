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
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(neighbors, len(vectors) - 1),
        min_dist=min_dist,
        metric=metric,
        random_state=seed,
        init="random" if len(vectors) < 64 else "spectral",
    )
    with warnings.catch_warnings():  # a seed makes UMAP run on one thread, and it says so each time
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        return np.asarray(reducer.fit_transform(np.asarray(vectors, np.float32)), np.float32)


def require_umap() -> ModuleType:
    # umap-learn, or what to install: asked before the collect pass, not after it.
    try:
        import umap
    except ImportError:
        raise SettingError(
            "the activation atlas lays vectors out with UMAP: pip install 'filterviz[atlas]'"
        ) from None
    return umap


def check_layout_size(count: int) -> None:
    if count < 4:
        raise SettingError(f"UMAP needs at least 4 vectors, got {count}: use more images or positions")
