"""The collect pass of concepts: a layer's activation vectors over a folder of photos, at every position or
a seeded sample of them, written to disk shard by shard (:mod:`filterviz.concept_atlases.shards`).

It streams the folder as the dataset examples do (:mod:`filterviz.jobs.streaming`), each batch split
over every device of every process. After each shard the record ``vectors/progress.json`` says how many
photos and shards are done, so a killed pass goes on from its last shard, to the same vectors.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from filterviz.concept_atlases.shards import FOLDER, Shards, write_shard
from filterviz.core.hits import EMPTY
from filterviz.core.network import Network, Params
from filterviz.errors import ImageError, OutputError
from filterviz.io.files import atomic_write
from filterviz.io.photos import IMAGE_SUFFIXES
from filterviz.jobs.folder import read_record
from filterviz.jobs.multihost import check_same_progress, host_copy, on_first
from filterviz.jobs.streaming import Reading, layer_vectors, stream
from filterviz.sharding import batch_sharding, global_array

PROGRESS = f"{FOLDER}/progress.json"


def _progress(folder: Path, settings: dict) -> tuple[int, int]:
    # (photos done, shards written) of an earlier pass with these settings, or (0, 0).
    record = read_record(folder / PROGRESS)
    if record is None:
        return 0, 0
    if record.get("settings") != settings or not isinstance(record.get("done"), int):
        raise OutputError(folder / PROGRESS, "holds the vectors of other settings; use another --out")
    return record["done"], int(record["shards"])


def collect_vectors(
    network: Network,
    params: Params,
    layer: str,
    root: Path,
    paths: list[str],
    reading: Reading,
    *,
    positions: int | None,
    seed: int,
    folder: Path,
    settings: dict,
    shown: bool,
    shard_vectors: int = 1 << 16,
) -> Shards:
    """The vectors of ``layer`` over the photos ``paths`` of ``root``: every position of each photo's map
    (``positions=None``) or ``positions`` drawn from a seed per photo. Shards of about ``shard_vectors``
    are written into ``folder/vectors/`` by process 0; every process returns them, read from disk."""
    done, shards = _progress(folder, settings)
    check_same_progress(done, folder)
    replicated, key = batch_sharding(reading.batch_size)[1], jax.random.key(seed)
    step = batch_sharding(reading.batch_size)[2]
    prepared = jax.tree.map(partial(global_array, sharding=replicated), network.prepared(params, jnp.float32))
    vectors: list[np.ndarray] = []
    places: list[np.ndarray] = []

    def flush(done: int) -> None:
        nonlocal shards
        if jax.process_index() == 0:
            if vectors:
                write_shard(folder, shards, np.concatenate(vectors), np.concatenate(places))
            record = {"settings": settings, "done": done, "shards": shards + bool(vectors)}
            atomic_write(folder / PROGRESS, json.dumps(record).encode())
        shards += bool(vectors)
        vectors.clear()
        places.clear()

    title = f"collecting {layer}"
    for pixels, indices, _ in stream(root, paths, reading, done=done, title=title, shown=shown):
        found, where, images = host_copy(
            layer_vectors(network, prepared, pixels, indices, key, layer, positions, replicated)
        )
        real = images != EMPTY  # padding, and photos that could not be read
        vectors.append(found[real].reshape(-1, found.shape[-1]))
        image_of = np.broadcast_to(images[real][:, None, None], (*where[real].shape[:2], 1))
        places.append(np.concatenate([image_of, where[real]], axis=-1).reshape(-1, 3))
        done = min(done + step, len(paths))
        if sum(map(len, vectors)) >= shard_vectors or done == len(paths):
            flush(done)
    on_first(folder, lambda: None)  # every process waits for the last shard
    found = Shards(folder, shards, network.layer(layer).channels)
    if not found.count:
        raise ImageError(root, f"holds no readable images ({', '.join(IMAGE_SUFFIXES)})")
    return found
