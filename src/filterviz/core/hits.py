"""Dataset examples, the numerical part: each filter's running top-k hits over a stream of images, its
activation statistics, and where in the image a hit's receptive field lies. Pure: no files.

A *hit* is one image's response to one filter: its score (the filter's maximum over positions, or its
mean), the image's index in the stream, and the position of the maximum in the layer's activation map.
The top-k is ordered by score, best first, ties broken by the lower image index, so merging partial
top-ks in any order or grouping gives exactly the top-k of the whole stream.

Shapes: activations ``float32[N, h, w, C]``; a :class:`TopK` holds ``[C, k]`` arrays.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from filterviz.core.network import Network, Params
from filterviz.errors import SettingError

EMPTY = np.iinfo(np.int32).max
"""Image index of an empty slot (and of padding images in a short last batch): sorts after every image."""

RANKINGS = ("max", "mean")
"""How an image's response to a filter is scored: its maximum over positions, or its spatial mean."""

HISTOGRAM_EDGES = np.concatenate([[-np.inf, 0.0], 10.0 ** np.arange(-2.0, 5.5, 0.5), [np.inf]]).astype(
    np.float32
)
"""Bins of the per-image score histogram: at most 0 (the filter does not fire), then half decades from
0.01 to 1e5, then above."""


class TopK(NamedTuple):
    """Each filter's best hits so far: ``scores float32[C, k]`` (best first; -inf where empty),
    ``images int32[C, k]`` (:data:`EMPTY` where empty), ``positions int32[C, k, 2]`` (y, x)."""

    scores: jax.Array
    images: jax.Array
    positions: jax.Array


class Statistics(NamedTuple):
    """Running sums per filter over the images seen: ``images_seen int32[]``, ``score_sum float32[C]`` (of the
    per-image maxima), ``mean_sum float32[C]`` (of the spatial means), ``fired int32[C]`` (images whose
    maximum is above 0), ``histogram int32[C, B]`` (per-image maxima in :data:`HISTOGRAM_EDGES`' bins)."""

    images_seen: jax.Array
    score_sum: jax.Array
    mean_sum: jax.Array
    fired: jax.Array
    histogram: jax.Array


def empty_top_k(channels: int, k: int) -> TopK:
    """A top-k of ``channels`` filters with no hits yet."""
    return TopK(
        jnp.full((channels, k), -jnp.inf, jnp.float32),
        jnp.full((channels, k), EMPTY, jnp.int32),
        jnp.zeros((channels, k, 2), jnp.int32),
    )


def empty_statistics(channels: int) -> Statistics:
    """Statistics of ``channels`` filters over no images."""
    bins = len(HISTOGRAM_EDGES) - 1
    return Statistics(
        jnp.zeros((), jnp.int32),
        jnp.zeros(channels, jnp.float32),
        jnp.zeros(channels, jnp.float32),
        jnp.zeros(channels, jnp.int32),
        jnp.zeros((channels, bins), jnp.int32),
    )


class ImageResponses(NamedTuple):
    """Each image's response to each filter: ``maxima float32[N, C]`` (over positions), ``positions
    int32[N, C, 2]`` (y, x of the maximum, the first in row-major order), ``means float32[N, C]``."""

    maxima: jax.Array
    positions: jax.Array
    means: jax.Array

    def scores(self, ranking: str = "max") -> jax.Array:
        """``float32[N, C]`` by which the hits are ranked (:data:`RANKINGS`)."""
        return self.maxima if ranking == "max" else self.means


def image_responses(activations: jax.Array) -> ImageResponses:
    """``[N, h, w, C]`` activations summarised per image and filter."""
    activations = activations.astype(jnp.float32)
    # One full pass, for each row's maximum; the position is then found in the small arrays that are
    # left: the first row holding the image's maximum, and the first column of that row holding it (the
    # first position in row-major order). A full-size argmax, or a second full pass for the position,
    # is 3-4x slower on a CPU at block1's and block2's maps.
    row_maxima = jnp.max(activations, axis=2)  # [N, h, C]
    maxima = jnp.max(row_maxima, axis=1)  # [N, C]
    y = jnp.argmax(row_maxima == maxima[:, None, :], axis=1)  # [N, C]
    row = jnp.take_along_axis(activations, y[:, None, None, :], axis=1)[:, 0]  # [N, w, C]
    x = jnp.argmax(row == maxima[:, None, :], axis=1)
    positions = jnp.stack([y, x], axis=-1).astype(jnp.int32)
    return ImageResponses(maxima, positions, jnp.mean(activations, axis=(1, 2)))


def merge(top: TopK, scores: jax.Array, images: jax.Array, positions: jax.Array) -> TopK:
    """``top`` with a batch's hits merged in: ``scores float32[N, C]``, ``images int32[N]`` (index in the
    stream; :data:`EMPTY` for padding), ``positions int32[N, C, 2]``. Exact and order-free: best score
    first, ties to the lower image index."""
    scores = jnp.where(images[:, None] == EMPTY, -jnp.inf, scores)
    batch = TopK(scores.T, jnp.broadcast_to(images, scores.T.shape), jnp.swapaxes(positions, 0, 1))
    return merge_top_k(top, batch)


def merge_top_k(first: TopK, second: TopK, k: int | None = None) -> TopK:
    """Two partial top-ks of the same filters (e.g. from two devices or hosts) as one of ``k`` hits
    (default: ``first``'s), exactly."""
    k = first.scores.shape[1] if k is None else k
    scores = jnp.concatenate([first.scores, second.scores], axis=1)
    images = jnp.concatenate([first.images, second.images], axis=1)
    ys = jnp.concatenate([first.positions[..., 0], second.positions[..., 0]], axis=1)
    xs = jnp.concatenate([first.positions[..., 1], second.positions[..., 1]], axis=1)
    # Sorting by (-score, image) is a total order on distinct images, so the result does not depend on
    # how the stream was split into batches, devices or hosts.
    negated, images, ys, xs = lax.sort((-scores, images, ys, xs), dimension=1, num_keys=2)
    return TopK(-negated[:, :k], images[:, :k], jnp.stack([ys[:, :k], xs[:, :k]], axis=-1))


def update_statistics(statistics: Statistics, responses: ImageResponses, valid: jax.Array) -> Statistics:
    """``statistics`` with a batch's ``responses`` added; ``valid bool[N]`` is False for padding images."""
    maxima, means = responses.maxima, responses.means
    weight = valid.astype(jnp.float32)[:, None]
    bins = jnp.searchsorted(jnp.asarray(HISTOGRAM_EDGES), maxima, side="left") - 1  # (lo, hi] -> bin
    one_hot = jax.nn.one_hot(bins, len(HISTOGRAM_EDGES) - 1, dtype=jnp.int32) * valid[:, None, None]
    return Statistics(
        statistics.images_seen + jnp.sum(valid, dtype=jnp.int32),
        statistics.score_sum + jnp.sum(maxima * weight, axis=0),
        statistics.mean_sum + jnp.sum(means * weight, axis=0),
        statistics.fired + jnp.sum((maxima > 0) & valid[:, None], axis=0, dtype=jnp.int32),
        statistics.histogram + jnp.sum(one_hot, axis=0),
    )


def receptive_field(
    network: Network, params: Params, layer: str, *, key: jax.Array | None = None
) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """Where a position of ``layer``'s activation map looks in the input, found from the network itself.

    Returns ``((top, left, bottom, right), (stride_y, stride_x))``: the input box (bottom and right
    exclusive, possibly past the image's edges) of position (0, 0), and how far the box moves per
    position, so position (y, x) sees ``(top + y * stride_y, left + x * stride_x, ...)``.

    Measured, not tabulated, so it holds for any network: the box is the support of the gradient of a
    position's activations (all channels) with respect to the input, for a few random inputs, at a
    size where the position lies clear of the edges; the stride is how far that box moves between
    neighbouring positions.
    """
    remembered = _FIELDS.get((network, layer))
    if remembered is not None:
        return remembered
    key = jax.random.key(0) if key is None else key
    size = max(32, network.minimum_size(layer))
    while True:  # grow the input until the middle position's field is clear of the edges
        height, width = network.output_size(layer, size, size)
        centre = (height // 2, width // 2)
        middle = _support(network, params, layer, size, centre, key)
        if middle[0] > 0 and middle[1] > 0 and middle[2] < size and middle[3] < size and height > 2:
            break
        if size >= 2048:
            raise SettingError(f"the receptive field of {layer} does not fit in a {size}x{size} input")
        size *= 2
    shifted = _support(network, params, layer, size, (centre[0] + 1, centre[1] + 1), key)
    stride = (shifted[0] - middle[0], shifted[1] - middle[1])
    top, left = middle[0] - centre[0] * stride[0], middle[1] - centre[1] * stride[1]
    field = (top, left, top + middle[2] - middle[0], left + middle[3] - middle[1]), stride
    _FIELDS[(network, layer)] = field
    return field


def field_at(box, stride, y: int, x: int, size: int) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)``: where position ``(y, x)`` looks in a ``size``-square input, from
    :func:`receptive_field`'s ``box`` and ``stride``, clipped to the input."""
    top, left, bottom, right = box
    top, bottom = top + y * stride[0], bottom + y * stride[0]
    left, right = left + x * stride[1], right + x * stride[1]
    return max(top, 0), max(left, 0), min(bottom, size), min(right, size)


# A field is the network's structure, not its weights' values: measured once per network and layer.
_FIELDS: dict[tuple[Network, str], tuple[tuple[int, int, int, int], tuple[int, int]]] = {}


def _support(network: Network, params: Params, layer: str, size: int, position, key) -> tuple[int, ...]:
    # Bounding box of the pixels whose gradient is non-zero for the activations at `position`, united
    # over a few random inputs (a ReLU that is off for one input is on for another).
    images = jax.random.normal(key, (4, size, size, 3)) * 60.0
    gradient = np.asarray(_gradient_magnitude(network, params, images, layer, jnp.asarray(position)))
    rows = np.flatnonzero(gradient.sum(axis=1) > 0)
    columns = np.flatnonzero(gradient.sum(axis=0) > 0)
    if rows.size == 0:
        raise SettingError(f"{layer} does not depend on its input")
    return int(rows[0]), int(columns[0]), int(rows[-1]) + 1, int(columns[-1]) + 1


@partial(jax.jit, static_argnames=("network", "layer"))
def _gradient_magnitude(
    network: Network, params: Params, images: jax.Array, layer: str, position: jax.Array
) -> jax.Array:
    # |d sum_c |activation[position, c]| / d pixel|, summed over images and colours: [H, W]. The
    # position is traced, so every position at one input size shares one compiled program.
    def response(pixels):
        activation = network.apply(params, pixels, [layer])[layer]
        return jnp.sum(jnp.abs(activation[:, position[0], position[1], :]))

    return jnp.abs(jax.grad(response)(images)).sum(axis=(0, 3))
