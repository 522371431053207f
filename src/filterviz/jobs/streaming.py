"""A folder of photos streamed through every device of every process, for the passes that read one (the
dataset examples, and the collect passes of activation atlases and concepts), and the layer vectors
those collect passes take.

Images are decoded on host threads a batch ahead of the device (Pillow releases the GIL while it
decodes) and fitted to the input size. Each global batch is split over every device of every process in
process order, each process decoding only its own run of it. A progress bar counts the images, and the
caller's running state is saved every so often, when every process agrees that it is time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from filterviz.core.hits import EMPTY
from filterviz.core.network import Network, Params, preprocess
from filterviz.errors import ImageError
from filterviz.io.photos import load_fitted
from filterviz.jobs.multihost import agree
from filterviz.progress import Progress
from filterviz.sharding import batch_sharding


class Reading(NamedTuple):
    """How a folder is read: images per global batch, their side and fit, and decoding threads."""

    batch_size: int
    size: int
    fit: str
    workers: int


def stream(
    root: Path,
    paths: Sequence[str],
    reading: Reading,
    *,
    done: int,
    title: str,
    shown: bool,
    save: Callable[[int], None] | None = None,
    save_seconds: float = math.inf,
) -> Iterator[tuple[jax.Array, jax.Array, list[tuple[str, str]]]]:
    """Global batches from image ``done`` on: ``pixels uint8[B, size, size, 3]`` and stream ``indices
    int32[B]`` (:data:`~filterviz.core.hits.EMPTY` for padding and unreadable images), split over the
    devices (``batch_sharding(reading.batch_size)``), and ``(path, reason)`` of this process's unreadable
    images in the batch.

    After the caller has taken a batch in, ``save(done)`` is called on every process once
    ``save_seconds`` have passed on any of them since the last save (not after the last batch: the
    caller saves its result)."""
    split, _, step = batch_sharding(reading.batch_size)
    share = reading._replace(batch_size=step // jax.device_count() * jax.local_device_count())
    saved_at, first = time.monotonic(), jax.process_index() == 0
    with Progress(len(paths), "image", title, enabled=shown and first) as bar:
        bar.update(done)
        for pixels, indices, unreadable in host_batches(root, paths, share, done):
            yield (
                jax.make_array_from_process_local_data(split, pixels, (step, *pixels.shape[1:])),
                jax.make_array_from_process_local_data(split, indices, (step,)),
                unreadable,
            )
            bar.update(min(done + step, len(paths)) - done)
            done = min(done + step, len(paths))
            due = save is not None and time.monotonic() - saved_at >= save_seconds and done < len(paths)
            if agree(np.array([due]))[0] and save is not None:  # a collective: every process decides
                save(done)
                saved_at = time.monotonic()


def _decoded(root: Path, relative: str, size: int, fit: str) -> np.ndarray | str:
    # An image fitted to the input size, or why it could not be read.
    try:
        return load_fitted(root / relative, size, fit)
    except ImageError as error:
        return error.reason


@partial(jax.jit, static_argnames=("network", "layer", "count", "replicated"))
def layer_vectors(
    network: Network,
    params: Params,
    pixels: jax.Array,
    indices: jax.Array,
    key: jax.Array,
    layer: str,
    count: int | None,
    replicated: NamedSharding,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``layer``'s activation vectors of a batch of ``pixels uint8[B, S, S, 3]``, gathered whole onto every
    device (``replicated``): ``(vectors [B, P, C], positions int[B, P, 2] (y, x), indices [B])``. ``P`` is
    every position of the map, or ``count`` positions drawn from ``fold_in(key, image index)``, so an
    image gives the same vectors in any batch, process or run."""
    fed = preprocess(pixels.astype(jnp.float32), network.preprocessing)
    maps = network.apply(params, fed, [layer])[layer]
    batch, height, width, channels = maps.shape

    def draw(index: jax.Array) -> jax.Array:
        if count is None:
            return jnp.arange(height * width)
        seeded = jax.random.fold_in(key, index)
        return jax.random.choice(seeded, height * width, (count,), height * width < count)

    places = jax.vmap(draw)(jnp.where(indices == EMPTY, 0, indices))
    vectors = jnp.take_along_axis(maps.reshape(batch, height * width, channels), places[..., None], axis=1)
    positions = jnp.stack([places // width, places % width], axis=-1)
    return jax.lax.with_sharding_constraint((vectors, positions, indices), replicated)


def host_batches(
    root: Path, paths: Sequence[str], share: Reading, start: int
) -> Iterator[tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]]:
    """This process's run of each global batch from image ``start`` on, decoded on ``share.workers``
    threads a batch ahead: ``(pixels uint8[b, size, size, 3], stream indices int32[b], unreadable)``,
    ``b = share.batch_size``. A global batch is ``b`` times the process count, process ``p`` reading
    its ``p``-th run of ``b``."""
    index, count = jax.process_index(), jax.process_count()
    batch, size = share.batch_size, share.size
    with ThreadPoolExecutor(share.workers) as pool:
        decode = partial(_decoded, root, size=size, fit=share.fit)
        pending = None
        for first in [*range(start + index * batch, len(paths) + index * batch, batch * count), None]:
            upcoming = None
            if first is not None:
                upcoming = (first, [pool.submit(decode, path) for path in paths[first : first + batch]])
            if pending is not None:
                began, futures = pending
                pixels = np.zeros((batch, size, size, 3), np.uint8)
                indices = np.full(batch, EMPTY, np.int32)
                unreadable = []
                for offset, future in enumerate(futures):
                    result = future.result()
                    if isinstance(result, str):
                        unreadable.append((paths[began + offset], result))
                    else:
                        pixels[offset], indices[offset] = result, began + offset
                yield pixels, indices, unreadable
            pending = upcoming
