"""Fitting a dictionary on vectors streamed from disk: minibatches in a seeded order, split over every
device of every process, the weights saved every so often as safetensors so a killed fit resumes to the
same dictionary.

Minibatch ``s`` is rows ``s * B ... s * B + B - 1`` of the training vectors in a seeded order that is
drawn again each epoch; it depends on nothing but the seed and ``s``, so a fit streamed from shards, one
on an array in memory, a resumed one and one split over several processes all see the same minibatches.
"""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path
from typing import Any

import jax
import numpy as np

from filterviz.concept_atlases.shards import InMemory
from filterviz.core import dictionaries as dl
from filterviz.errors import OutputError
from filterviz.io.files import atomic_write
from filterviz.io.tensors import decode_safetensors, encode_safetensors
from filterviz.jobs.folder import LARGEST_RECORD_BYTES
from filterviz.progress import Progress
from filterviz.sharding import batch_sharding, global_array

_SAMPLE = 16384
"""Vectors the starting weights are taken from (the scale, the first atoms, the archetypal anchors)."""


class Order:
    """The seeded order of ``rows`` (indices of training vectors) that minibatches are taken from."""

    def __init__(self, rows: np.ndarray, seed: int) -> None:
        self.rows, self.seed = np.asarray(rows, np.int64), seed
        self._epochs: dict[int, np.ndarray] = {}

    def _epoch(self, epoch: int) -> np.ndarray:
        if epoch not in self._epochs:
            self._epochs = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.rows)}
        return self._epochs[epoch]

    def batch(self, step: int, size: int) -> np.ndarray:
        """The indices of minibatch ``step`` of ``size`` vectors."""
        places = step * size + np.arange(size)
        epochs, within = np.divmod(places, len(self.rows))
        return np.concatenate([self._epoch(e)[within[epochs == e]] for e in np.unique(epochs)])


def _replicated(tree: Any) -> Any:
    return jax.tree.map(partial(global_array, sharding=batch_sharding(1)[1]), tree)


def _minibatch(source: InMemory, indices: np.ndarray) -> jax.Array:
    # This process's contiguous run of the minibatch, placed on its devices as part of one global array.
    split, _, size = batch_sharding(len(indices))
    share = size // jax.process_count()
    mine = indices[jax.process_index() * share : (jax.process_index() + 1) * share]
    return jax.make_array_from_process_local_data(split, source.rows(mine), (size, source.channels))


@partial(jax.jit, static_argnames=("dictionary",), donate_argnums=(1, 2))
def _step(dictionary: dl.Dictionary, weights: dl.Weights, state: Any, vectors: jax.Array, forgetting: float):
    if dictionary.kind == "nmf":
        return dl.nmf_step(dictionary, weights, state, vectors, forgetting)
    return dl.autoencoder_step(dictionary, weights, state, vectors)


def start(dictionary: dl.Dictionary, source: InMemory, order: Order, seed: int) -> tuple[dl.Weights, Any]:
    """Seeded starting ``(weights, optimiser state or NMF statistics)`` from a sample of the training rows."""
    sample = np.sort(order.batch(0, min(_SAMPLE, len(order.rows))))
    weights = dl.initial_weights(dictionary, jax.random.key(seed), source.rows(sample))
    if dictionary.kind == "nmf":
        return weights, dl.nmf_statistics(dictionary, source.channels)
    return weights, dl.optimizer(dictionary).init(weights["trained"])


def fit(
    dictionary: dl.Dictionary,
    source: InMemory,
    rows: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    checkpoint: Path | None = None,
    save_every: int = 500,
    shown: bool = False,
) -> dl.Weights:
    """``dictionary`` fitted for ``steps`` minibatches of ``batch_size`` of the vectors ``rows`` of
    ``source``. With ``checkpoint`` (a ``.safetensors`` path), the weights and optimiser state are saved
    there every ``save_every`` steps and at the end, and a fit found there with the same settings goes
    on from its step."""
    order = Order(rows, seed)
    weights, state = start(dictionary, source, order, seed)
    settings = json.dumps(
        {**dataclasses.asdict(dictionary), "steps": steps, "batch_size": batch_size, "seed": seed}
    )
    done = 0
    if checkpoint is not None and checkpoint.exists():
        weights, state, done = load_checkpoint(checkpoint, settings, (weights, state))
    weights, state = _replicated((weights, state))
    forgetting = max(0.0, 1.0 - batch_size / len(order.rows))  # NMF remembers about one epoch
    first = jax.process_index() == 0
    with Progress(steps, "step", f"fitting {dictionary.kind}", enabled=shown and first) as bar:
        bar.update(done)
        for step in range(done, steps):
            weights, state, _ = _step(
                dictionary, weights, state, _minibatch(source, order.batch(step, batch_size)), forgetting
            )
            bar.update(1)
            if checkpoint is not None and first and ((step + 1) % save_every == 0 or step + 1 == steps):
                save_checkpoint(checkpoint, settings, (weights, state), step + 1)
    return jax.tree.map(np.asarray, weights)


def save_checkpoint(path: Path, settings: str, tree: Any, step: int) -> None:
    """The weights and optimiser state ``tree`` after ``step`` steps, as one safetensors file."""
    leaves = {f"{i:04d}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(tree))}
    metadata = {"filterviz": "dictionary", "settings": settings, "step": str(step)}
    atomic_write(path, encode_safetensors(leaves, metadata))


def load_checkpoint(path: Path, settings: str, like: Any) -> tuple[Any, Any, int]:
    """``(weights, state, step)`` saved at ``path`` by a fit of the same ``settings``, shaped like
    ``like``; :class:`OutputError` if the file is another fit's or not one filterviz wrote."""
    if path.stat().st_size > 64 * LARGEST_RECORD_BYTES:
        raise OutputError(path, "is not a dictionary filterviz wrote; use another --out")
    arrays, metadata = decode_safetensors(path.read_bytes(), str(path))
    template = jax.tree.leaves(like)
    if metadata.get("filterviz") != "dictionary" or metadata.get("settings") != settings:
        raise OutputError(path, "holds a dictionary of other settings; use another --out")
    leaves = [arrays.get(f"{i:04d}") for i in range(len(template))]
    if any(a is None or a.shape != np.shape(t) for a, t in zip(leaves, template, strict=True)):
        raise OutputError(path, "is not a dictionary filterviz can resume; use another --out")
    weights, state = jax.tree.unflatten(jax.tree.structure(like), leaves)
    return weights, state, int(metadata["step"])
