"""What a fitted dictionary is worth and what each concept is, read from the vectors in blocks (memory
flat in the dataset's size): held-out measures, each concept's importance, its strongest vectors and the
classes it fires on."""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from filterviz.concept_atlases.shards import InMemory
from filterviz.core import dictionaries as dl

BLOCK = 8192
"""Vectors encoded per call."""


def held_out_images(images: int, seed: int) -> np.ndarray:
    """The images (indices) whose vectors are held out of the fit to measure it: a seeded eighth, at least
    one when there are two or more images, none of a single image."""
    count = 0 if images < 2 else max(1, images // 8)
    return np.sort(np.random.default_rng([seed, 8]).choice(images, count, replace=False))


def split_rows(source: InMemory, images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(training rows, held-out rows)`` of ``source``: a vector is held out when its image is."""
    held = np.zeros(images, bool)
    held[held_out_images(images, seed)] = True
    image_of = [source.places(np.arange(f, f + len(b)))[:, 0] for f, b in source.blocks(BLOCK)]
    out = held[np.concatenate(image_of)] if image_of else np.zeros(0, bool)
    rows = np.arange(source.count)
    return rows[~out], rows[out]


def encoded(dictionary: dl.Dictionary, weights: dl.Weights, vectors: np.ndarray) -> np.ndarray:
    """The codes ``float32[N, K]`` of ``vectors [N, C]``, by one compiled program per shape."""
    return np.asarray(_encode(dictionary, weights, vectors))


_encode = jax.jit(dl.encode, static_argnums=0, static_argnames=("training",))
_decode = jax.jit(dl.decode, static_argnums=0)


def held_out_measures(
    dictionary: dl.Dictionary, weights: dl.Weights, source: InMemory, rows: np.ndarray
) -> dict:
    """Unexplained variance (1 - R²), mean L0 and the fraction of dead concepts on the vectors ``rows``."""
    squared, total, active, fired = 0.0, 0.0, 0.0, np.zeros(dictionary.concepts, bool)
    mean = np.zeros(source.channels)
    blocks = [rows[f : f + BLOCK] for f in range(0, len(rows), BLOCK)]
    for block in blocks:  # the mean first, then the variances about it
        vectors = source.rows(block).astype(np.float64)
        mean = mean + vectors.sum(0)
    mean = mean / max(len(rows), 1)
    for block in blocks:
        vectors = source.rows(block)
        codes = encoded(dictionary, weights, vectors)
        rebuilt = np.asarray(_decode(dictionary, weights, codes), np.float64)
        squared += float(np.sum(np.square(vectors - rebuilt)))
        total += float(np.sum(np.square(vectors - mean)))
        active += float(np.sum(codes > 0))
        fired |= np.any(codes > 0, axis=0)
    return {
        "unexplained_variance": squared / max(total, 1e-30),
        "mean_l0": active / max(len(rows), 1),
        "dead_fraction": float(np.mean(~fired)),
        "held_out_vectors": len(rows),
    }


class Usage(NamedTuple):
    """How each concept is used over every vector: ``frequency [K]`` (share of vectors it fires on),
    ``mean_code [K]`` (its mean code: the importance, how often times how strongly), ``top [K, n]`` its
    strongest vectors (-1 where it fired on fewer), ``top_codes [K, n]``, ``classes [K, L]`` vectors of
    each class it fires on."""

    frequency: np.ndarray
    mean_code: np.ndarray
    top: np.ndarray
    top_codes: np.ndarray
    classes: np.ndarray


def usage(
    dictionary: dl.Dictionary,
    weights: dl.Weights,
    source: InMemory,
    labels: np.ndarray,
    classes: int,
    top: int,
) -> Usage:
    """Each concept's :class:`Usage`, exact over every vector of ``source`` (``labels``: each image's
    class)."""
    concepts = dictionary.concepts
    fired, summed = np.zeros(concepts), np.zeros(concepts)
    best, best_codes = np.full((concepts, top), -1, np.int64), np.full((concepts, top), -np.inf)
    mix = np.zeros((concepts, classes), np.int64)
    for first, vectors in source.blocks(BLOCK):
        codes = encoded(dictionary, weights, vectors)
        on = codes > 0
        fired += on.sum(0)
        summed += codes.sum(0)
        kinds = labels[source.places(np.arange(first, first + len(vectors)))[:, 0]]
        mix += (on.T.astype(np.float32) @ np.eye(classes, dtype=np.float32)[kinds]).astype(np.int64)
        joined = np.concatenate([best_codes, codes.T], axis=1)
        here = np.broadcast_to(first + np.arange(len(vectors)), (concepts, len(vectors)))
        indices = np.concatenate([best, here], axis=1)
        order = np.argsort(-joined, axis=1, kind="stable")[:, :top]
        best_codes, best = np.take_along_axis(joined, order, 1), np.take_along_axis(indices, order, 1)
    best[best_codes <= 0] = -1
    count = max(source.count, 1)
    return Usage(fired / count, summed / count, best, np.maximum(best_codes, 0), mix)


def nearest_concepts(directions: np.ndarray, count: int) -> np.ndarray:
    """``[K, count]``: each concept's most similar others by the cosine of their directions."""
    cosines = directions @ directions.T
    np.fill_diagonal(cosines, -np.inf)
    return np.argsort(-cosines, axis=1, kind="stable")[:, :count]


def concept_map(directions: np.ndarray) -> np.ndarray:
    """``float32[K, 2]`` in ``[0, 1]``: each concept's place on a 2-D map of all of them, the first two
    principal components of the unit ``directions [K, C]`` (similar concepts land close), each axis
    scaled to the unit interval. Deterministic: each component's sign is fixed by its largest entry."""
    centred = directions - directions.mean(0)
    top = np.linalg.svd(centred, full_matrices=False)[2][:2]
    top = top * np.sign(top[np.arange(len(top)), np.abs(top).argmax(1)])[:, None]
    place = centred @ top.T
    if place.shape[1] < 2:  # one channel: the second axis is flat
        place = np.pad(place, ((0, 0), (0, 2 - place.shape[1])))
    span = np.maximum(place.max(0) - place.min(0), 1e-12)
    return ((place - place.min(0)) / span).astype(np.float32)


def picture_measures(
    picture_codes: np.ndarray, patch_codes: np.ndarray, live: np.ndarray
) -> dict[str, float]:
    """How well each concept's picture shows it, over the live concepts (``live bool[K]``, fired at least
    once): the share whose own code is the largest of all concepts' on its picture, and the share whose
    picture's code exceeds that of its strongest dataset vector.

    Args:
      picture_codes: ``float32[K, K]``, row ``i`` every concept's code on concept ``i``'s picture (mean
        over positions, as the ``concept`` objective measures it).
      patch_codes: ``float32[K]``, each concept's code at its strongest dataset vector.
      live: ``bool[K]``.
    """
    live = np.asarray(live, bool)
    own = np.diagonal(picture_codes)
    largest = np.argmax(picture_codes, axis=1) == np.arange(len(own))
    count = max(int(live.sum()), 1)
    return {
        "pictures_own_code_largest": float((largest & live).sum() / count),
        "pictures_above_best_vector": float(((own > patch_codes) & live).sum() / count),
    }
