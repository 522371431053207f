"""The notebook's method by its familiar names: :func:`ascend`, :func:`layer_image`, :func:`activations`,
:func:`achieved`, and its grid of pictures, :func:`show_filters`.

Each is a thin wrapper over the one engine (:mod:`filterviz.core.engine`) with the ``notebook`` preset: pixels
fed to the network as they are (0-255 RGB, as the notebook fed VGG16), the gradient of the filter's mean
activation divided by its RMS + 1e-5, ``steps`` steps in one ``lax.fori_loop``, vmapped over filters.
One compiled program serves every filter of a layer (filter indices and the step size are traced).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from filterviz.core.ascent_checks import check_start
from filterviz.core.checks import (
    check_count,
    check_filters,
    check_image_size,
    check_precision,
    compute_dtype,
    default_batch_size,
    matmul_precision,
    padded_chunks,
)
from filterviz.core.engine import measure_batch
from filterviz.core.methods import get_method, notebook_method
from filterviz.core.network import Network, Params
from filterviz.core.objectives import channel
from filterviz.core.pictures import as_image
from filterviz.deprecation import renamed
from filterviz.draw.rendering import render_pixels
from filterviz.errors import ImageError
from filterviz.io.plots import filter_grid, filter_labels
from filterviz.io.programs import kept
from filterviz.networks import get_network


@renamed(image="start")
def ascend(
    params: Params,
    layer: str,
    filters: int | Sequence[int] | np.ndarray | jax.Array,
    start: jax.Array | np.ndarray,
    *,
    batch_size: int | None = None,
    progress: bool | None = None,
    network: Network | str = "vgg16",
    **settings: Any,
) -> jax.Array:
    """Gradient ascent that makes each filter of ``filters`` fire as strongly as possible.

    For each filter: the loss is the filter's mean activation over the image, its gradient with respect
    to the image is divided by its RMS + 1e-5, and ``image += step_size * gradient``, ``steps`` times,
    inside one ``lax.fori_loop``. Filters run ``batch_size`` at a time through one vmapped, jitted
    program (the last chunk is padded, so the program is reused); memory stays bounded for any number.

    Args:
      params: the network's parameters from :func:`filterviz.load_weights`.
      layer: a layer name, e.g. ``"block4_conv1"`` (pool layers have filters too).
      filters: one filter index or a sequence of them, ``N`` in all.
      start: the start image, ``float32[H, W, 3]`` shared by all filters or ``float32[N, H, W, 3]``.
      batch_size: filters per device per compiled chunk; default from the device's memory (the
        filters are split over every device of the process).
      progress: show a bar of the steps done, rate and time left (default: on a terminal or in a
        notebook, not in CI; see :mod:`filterviz.progress`).
      network: ``"vgg16"`` (default) or any other network (see :func:`filterviz.core.network`).
      **settings: the ``notebook`` method's settings (:func:`filterviz.get_method`): ``steps`` (20),
        ``step_size`` (1.0: pixels moved per step, in units of the normalised gradient), ``precision``
        (``"float32"``, ``"tf32"`` or ``"bfloat16"``, see :mod:`filterviz.core.checks`).

    Returns:
      ``float32[N, H, W, 3]``: the ascended images, in the order of ``filters``.

    Raises:
      UnknownLayerError, FilterIndexError, ImageError: bad layer, filter or image shape.
      SettingError: negative steps, batch size below 1, unknown precision, a size the layer cannot take.

    >>> import jax, filterviz
    >>> params = filterviz.network("vgg16").init(jax.random.key(0))
    >>> start = filterviz.random_image(jax.random.key(1), 32, 32)
    >>> filterviz.ascend(params, "block1_conv1", [0, 5, 7], start, steps=3).shape
    (3, 32, 32, 3)
    """
    network = get_network(network)
    layer = network.layer(layer).name
    indices = check_filters(network, layer, filters)
    method = get_method("notebook", **settings)
    if batch_size is not None:
        check_count(batch_size, "batch_size")
    start = check_start(start, len(indices))
    if not len(indices):
        return jnp.zeros((0, *start.shape[-3:]), jnp.float32)
    return render_pixels(
        params,
        channel(layer, indices),
        network=network,
        method=method,
        start=start,
        batch_size=batch_size,
        progress=progress,
    )


@functools.partial(kept, static=("network", "layer", "precision"))  # kept between sessions
@functools.partial(jax.jit, static_argnames=("network", "layer", "precision"))
def _activations(
    network: Network, params: Params, images: jax.Array, layer: str, precision: str
) -> jax.Array:
    dtype = compute_dtype(precision)
    with matmul_precision(precision):
        outputs = network.apply(network.prepared(params, dtype), images.astype(dtype), [layer])[layer]
    return outputs.astype(jnp.float32)


def activations(
    params: Params,
    images: jax.Array | np.ndarray,
    layer: str,
    *,
    precision: str = "float32",
    network: Network | str = "vgg16",
) -> jax.Array:
    """The activations of ``layer``: ``float32[N, H, W, 3] -> float32[N, h, w, C]`` (jitted per layer/shape).

    ``images`` are fed to the network as they are (0-255 RGB for the notebook's VGG16). A single
    ``[H, W, 3]`` image is treated as a batch of one. ``precision`` as :func:`ascend`'s; the default is
    full float32 on every device (a GPU's own default for float32 convolutions is TF32, whose relative
    error grows to about 1e-3 by VGG16's block5).
    """
    network = get_network(network)
    layer = network.layer(layer).name
    check_precision(precision)
    try:
        images = jnp.asarray(images, jnp.float32)
    except (TypeError, ValueError):
        raise ImageError(None, f"images must be an array of numbers, got {type(images).__name__}") from None
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ImageError(None, f"images must be [N, H, W, 3], got {tuple(images.shape)}")
    check_image_size(network, layer, images.shape[1], images.shape[2])
    return _activations(network, params, images, layer, precision)


def achieved(
    params: Params,
    layer: str,
    filters: int | Sequence[int] | np.ndarray,
    images: jax.Array | np.ndarray,
    *,
    network: Network | str = "vgg16",
) -> np.ndarray:
    """The mean activation each filter of ``filters [N]`` reaches on its image ``images [N, H, W, 3]``
    (e.g. :func:`ascend`'s result), in float32, the pixels fed as :func:`ascend` feeds them:
    ``-> float32[N]``. Zero means the filter never fired. Runs in chunks sized from the device's memory.
    """
    network = get_network(network)
    layer = network.layer(layer).name
    indices = check_filters(network, layer, filters)
    images = check_start(images, len(indices))
    if images.ndim != 4:
        raise ImageError(None, f"images must be [N, H, W, 3], one per filter, got {tuple(images.shape)}")
    height, width = images.shape[1:3]
    check_image_size(network, layer, height, width)
    chunk = max(1, min(len(indices), default_batch_size(network, layer, height, width)))
    method = notebook_method()
    values = [
        measure_batch(
            network, params, channel(layer, indices[padded]), images[padded][:, None], method=method
        )[: len(rows)]
        for rows, padded in padded_chunks(len(indices), chunk)
    ]
    return np.asarray(jnp.concatenate(values)) if values else np.zeros(0, np.float32)


@renamed(image="start")
def layer_image(
    params: Params,
    layer: str,
    filter_index: int,
    start: jax.Array | np.ndarray,
    *,
    network: Network | str = "vgg16",
    **settings: Any,
) -> np.ndarray:
    """The notebook's function: one filter's picture ``uint8[H, W, 3]``, ascended from ``start [H, W, 3]``
    with :func:`ascend`'s ``settings``."""
    return as_image(ascend(params, layer, [filter_index], start, network=network, **settings)[0])


@renamed(image="start", n="count")
def show_filters(
    params: Params,
    layer: str,
    start: jax.Array | np.ndarray,
    count: int = 20,
    *,
    filters: Sequence[int] | None = None,
    columns: int = 10,
    batch_size: int | None = None,
    progress: bool | None = None,
    network: Network | str = "vgg16",
    **settings: Any,
) -> Figure:
    """The notebook's picture: ``count`` filters of ``layer`` (the first ``count``, or ``filters``) in a
    grid.

    One vmapped :func:`filterviz.ascend` call (with its ``settings``: ``steps``, ``step_size`` ...)
    computes every picture from ``start`` (``float32[H, W, 3]``), with a progress bar in a notebook or on
    a terminal. Each picture is labelled with its filter and the mean activation it reached (0: the
    filter never fired). Returns a matplotlib Figure (2 rows of 10 for the default ``count=20``).
    """
    network = get_network(network)
    layer = network.layer(layer).name
    channels = network.layer(layer).channels
    chosen = check_filters(network, layer, filters if filters is not None else range(min(count, channels)))
    images = ascend(
        params, layer, chosen, start, batch_size=batch_size, progress=progress, network=network, **settings
    )
    reached = achieved(params, layer, chosen, images, network=network)
    labels = filter_labels(chosen, reached)
    return filter_grid(as_image(images), labels, columns=columns, title=layer)
