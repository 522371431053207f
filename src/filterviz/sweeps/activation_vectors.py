"""The collect stage of an activation atlas: a few activation vectors per image of a folder, at random
positions seeded by the image's index, read in batches by the examples pass's decoder and saved every so
often, so a killed run goes on from its last save (:mod:`filterviz.sweeps.activation_atlas`). Each
batch is split over the devices of this process."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from filterviz.core.hits import EMPTY
from filterviz.core.network import Network, Params, preprocess
from filterviz.errors import ImageError
from filterviz.io.photos import IMAGE_SUFFIXES
from filterviz.progress import Progress
from filterviz.sweeps.example_files import load_progress, save_progress
from filterviz.sweeps.examples import _batches


class Reading(NamedTuple):
    # How images are read: what the examples pass's decoder needs.
    batch_size: int
    size: int
    fit: str
    workers: int


@partial(jax.jit, static_argnames=("network", "layer", "count"))
def _sample(network: Network, params: Params, pixels, indices, key, layer: str, count: int):
    # `count` activation vectors per image at positions drawn from fold_in(key, image index):
    # (vectors [B, count, C], positions [B, count, 2]).
    activations = network.apply(
        params, preprocess(pixels.astype(jnp.float32), network.preprocessing), [layer]
    )
    maps = activations[layer]
    batch, height, width, channels = maps.shape

    def draw(index):
        return jax.random.choice(
            jax.random.fold_in(key, index), height * width, (count,), height * width < count
        )

    places = jax.vmap(draw)(indices)
    vectors = jnp.take_along_axis(maps.reshape(batch, height * width, channels), places[..., None], axis=1)
    return vectors, jnp.stack([places // width, places % width], axis=-1)


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
    """``(vectors float32[N, C], images int[N], positions int[N, 2])`` of the readable images."""
    empty = {
        "vectors": np.zeros((0, count, network.layer(layer).channels), np.float32),
        "images": np.zeros((0,), np.int64),
        "positions": np.zeros((0, count, 2), np.int64),
    }
    state, done = empty, 0
    if progress_file is not None and progress_file.exists():
        state, done, _ = load_progress(progress_file, settings, empty)
    parts = {name: [value] for name, value in state.items()}
    key, saved_at = jax.random.key(seed), time.monotonic()
    # Each batch is split over this process's devices: a whole share for each.
    devices = jax.local_devices()
    split = NamedSharding(Mesh(np.asarray(devices), ("images",)), PartitionSpec("images"))
    reading = reading._replace(batch_size=-(-reading.batch_size // len(devices)) * len(devices))
    with Progress(len(paths), "image", f"collecting {layer}", enabled=shown) as bar:
        bar.update(done)
        for pixels, indices, _ in _batches(root, paths, reading, done):
            real = indices != EMPTY  # padding, and images that could not be read
            places = np.where(real, indices, 0)
            pixels, places = jax.device_put(pixels, split), jax.device_put(places, split)
            vectors, positions = _sample(network, params, pixels, places, key, layer, count)
            parts["vectors"].append(np.asarray(vectors)[real])
            parts["positions"].append(np.asarray(positions)[real])
            parts["images"].append(indices[real].astype(np.int64))
            before, done = done, min(done + reading.batch_size, len(paths))
            bar.update(done - before)
            if progress_file is not None and time.monotonic() - saved_at > save_seconds:
                state = {name: np.concatenate(values) for name, values in parts.items()}
                save_progress(progress_file, settings, state, done, [])
                saved_at = time.monotonic()
    state = {name: np.concatenate(values) for name, values in parts.items()}
    if progress_file is not None:
        save_progress(progress_file, settings, state, done, [])
    if not len(state["images"]):
        raise ImageError(root, f"holds no readable images ({', '.join(IMAGE_SUFFIXES)})")
    images = np.repeat(state["images"], count)
    return state["vectors"].reshape(-1, state["vectors"].shape[-1]), images, state["positions"].reshape(-1, 2)
