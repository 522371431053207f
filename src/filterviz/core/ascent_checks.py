"""Checks of an ascent's settings, before any work: its size, the chunk a device holds, a method's
octave stages against a layer, and a start image."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from filterviz.core.checks import check_count, check_image_size, default_batch_size
from filterviz.core.methods import Method
from filterviz.core.network import Network
from filterviz.core.parameterizations import Pixels
from filterviz.core.pictures import check_finite
from filterviz.errors import ImageError, SettingError


def check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """``size`` (``H`` or ``(H, W)``) as ``(height, width)``, each a whole number of at least 1."""
    try:
        height, width = (size, size) if isinstance(size, int) else tuple(size)
    except (TypeError, ValueError):
        raise SettingError(f"size must be H or (H, W), got {size!r}") from None
    return check_count(height, "the height"), check_count(width, "the width")


def default_chunk(
    network: Network, method: Method, layer: str, height: int, width: int, device: jax.Device | None = None
) -> int:
    """Objectives per compiled chunk on ``device`` (default the first): as many as its memory holds by
    :func:`filterviz.core.checks.default_batch_size`, each objective counting its images and copies, at
    the size the network is fed (the method's view)."""
    fed = method.fed_size(height, width)
    return max(1, default_batch_size(network, layer, *fed, device) // method.images_per_objective)


def check_method_size(network: Network, method: Method, layer: str, height: int, width: int) -> None:
    """:func:`filterviz.core.checks.check_image_size` for ``method``: every octave stage must be large enough
    for ``layer``, and the images of one objective (its copies included, at the size the network is fed:
    the method's view) must fit the device."""
    check_image_size(network, layer, *method.fed_size(height, width), copies=method.images_per_objective)
    if method.octaves is not None:
        smallest = method.octaves.sizes(height, width)[0]
        minimum = network.minimum_size(layer)
        if min(smallest) < minimum:
            raise SettingError(
                f"the first of {method.octaves.stages} octave stages shrinks {height}x{width} to "
                f"{smallest[0]}x{smallest[1]}, too small for {layer} (at least {minimum}x{minimum}); use "
                "fewer stages, a smaller scale or a larger image"
            )


def start_parameterization(method: Method) -> Pixels:
    """The parameterization a start image goes into: ``method``'s, if it optimises pixels; else
    :class:`SettingError` (a spectrum method has no pixels to start from)."""
    if not isinstance(method.parameterization, Pixels):
        raise SettingError(f"a start image needs a pixel method; {method.name} optimises a spectrum")
    return method.parameterization


def check_start(start: object, count: int) -> jax.Array:
    """A start image, ``[H, W, 3]`` (shared) or ``[count, H, W, 3]`` (one per objective), as float32,
    finite; else :class:`ImageError`."""
    try:
        shape = tuple(np.shape(start))  # type: ignore[call-overload]  # any array-like; checked below
    except (TypeError, ValueError):
        shape = ()
    shared = len(shape) == 3 and shape[-1] == 3
    if not (shared or (len(shape) == 4 and shape[-1] == 3 and shape[0] == count)):
        raise ImageError(
            None, f"start image must be [H, W, 3] or [{count}, H, W, 3] (one per objective), got {shape}"
        )
    try:
        array = jnp.asarray(start, jnp.float32)
    except (TypeError, ValueError):
        raise ImageError(None, f"start image must be numbers, got {type(start).__name__}") from None
    check_finite(array, "the start image")
    return array
