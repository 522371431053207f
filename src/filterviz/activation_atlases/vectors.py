"""The collect stage of an activation atlas: a few activation vectors per image of a folder, at random
positions seeded by the image's index, streamed as the examples pass streams its folder
(:mod:`filterviz.jobs.streaming`) and saved every so often, so a killed run goes on from its last save
(:mod:`filterviz.activation_atlases.atlas`)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from filterviz.core.hits import EMPTY
from filterviz.core.network import Network, Params
from filterviz.errors import ImageError
from filterviz.io.photos import IMAGE_SUFFIXES
from filterviz.jobs.folder import load_progress, save_progress
from filterviz.jobs.multihost import check_same_progress, host_copy
from filterviz.jobs.streaming import Reading, layer_vectors, stream
from filterviz.sharding import batch_sharding, global_array


def collect(
    network: Network,
    params: Params,
    layer: str,
    root: Path,
    paths: list[str],
    reading: Reading,
    *,
    count: int,
    seed: int,
    progress_file: Path | None,
    settings: dict,
    shown: bool,
    save_seconds: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(vectors float32[N, C], images int[N], positions int[N, 2])`` of the readable images.

    Each batch is split over every device of every process (``jax.distributed``), each process decoding
    only its own share of the images; every process returns every vector, and process 0 saves the
    progress (``progress_file``, in a folder the processes share)."""
    empty: dict[str, np.ndarray] = {
        "vectors": np.zeros((0, count, network.layer(layer).channels), np.float32),
        "images": np.zeros((0,), np.int64),
        "positions": np.zeros((0, count, 2), np.int64),
    }
    state: dict[str, np.ndarray] = empty
    done = 0
    if progress_file is not None and progress_file.exists():
        state, done, _ = load_progress(progress_file, settings, empty)
    check_same_progress(done, progress_file.parent if progress_file is not None else None)
    parts: dict[str, list[np.ndarray]] = {name: [value] for name, value in state.items()}
    replicated, key = batch_sharding(reading.batch_size)[1], jax.random.key(seed)
    prepared = jax.tree.map(partial(global_array, sharding=replicated), network.prepared(params, jnp.float32))
    first = jax.process_index() == 0

    def save(done: int) -> None:
        if first and progress_file is not None:
            save_progress(progress_file, settings, {k: np.concatenate(v) for k, v in parts.items()}, done, [])

    batches = stream(
        root, paths, reading, done=done, title=f"collecting {layer}", shown=shown,
        save=save if progress_file is not None else None, save_seconds=save_seconds,
    )  # fmt: skip
    for pixels, indices, _ in batches:
        vectors, positions, indices = host_copy(
            layer_vectors(network, prepared, pixels, indices, key, layer, count, replicated)
        )
        real = indices != EMPTY  # padding, and images that could not be read
        parts["vectors"].append(vectors[real])
        parts["positions"].append(positions[real].astype(np.int64))
        parts["images"].append(indices[real].astype(np.int64))
    state = {name: np.concatenate(values) for name, values in parts.items()}
    if progress_file is not None and first:
        save_progress(progress_file, settings, state, len(paths), [])
    if not len(state["images"]):
        raise ImageError(root, f"holds no readable images ({', '.join(IMAGE_SUFFIXES)})")
    images = np.repeat(state["images"], count)
    return state["vectors"].reshape(-1, state["vectors"].shape[-1]), images, state["positions"].reshape(-1, 2)
