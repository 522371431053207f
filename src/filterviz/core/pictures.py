"""Pixels and pictures, pure: the noise start, the notebook's deprocessing, clipping, finiteness.

Pixel values in filterviz are ``float32[..., H, W, 3]`` on the 0-255 scale in RGB order, as the
notebook feeds them to the network; pictures for people are ``uint8[..., H, W, 3]``. Nothing here
reads or writes a file (:mod:`filterviz.io.files` does).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from filterviz.errors import ImageError, SettingError


def random_image(
    key: jax.Array, height: int = 128, width: int = 128, mean: float = 127.0, std: float = 10.0
) -> jax.Array:
    """Gaussian noise around grey: ``float32[height, width, 3]`` with the given mean and std.

    >>> random_image(jax.random.key(0), 4, 6).shape
    (4, 6, 3)
    """
    for side in (height, width):
        if isinstance(side, bool) or not isinstance(side, int | np.integer) or side < 1:
            raise SettingError(f"an image side must be a whole number of at least 1, got {side!r}")
    if not (math.isfinite(mean) and math.isfinite(std)):
        raise SettingError(f"mean and std must be finite, got {mean!r} and {std!r}")
    return _noise(key, float(mean), float(std), (int(height), int(width), 3))


@functools.partial(jax.jit, static_argnames=("shape",))  # one program, not an eager op (and cast) each
def _noise(key: jax.Array, mean: float, std: float, shape: tuple[int, ...]) -> jax.Array:
    return mean + std * jax.random.normal(key, shape, jnp.float32)


def as_image(x: jax.Array | np.ndarray, spread: float = 0.1) -> np.ndarray:
    """The notebook's deprocessing: ``float[..., H, W, 3] -> uint8[..., H, W, 3]``, per image.

    Each image is centred, scaled to std ``spread`` (0.1 in the notebook, 0.25 in the later Keras
    example), shifted to 0.5, clipped to [0, 1] and scaled to 0-255 (truncated to integers, as
    ``astype('uint8')`` does in the notebook). The argument is not modified.

    >>> as_image(np.array([[[0.0, 1.0, 2.0]]])).tolist()
    [[[96, 127, 158]]]
    """
    try:
        x = np.array(x, dtype=np.float64, copy=True)
    except (TypeError, ValueError):
        raise ImageError(None, f"expected an array of numbers, got {type(x).__name__}") from None
    if x.ndim < 3 or x.shape[-1] != 3:
        raise ImageError(None, f"expected [..., H, W, 3], got {x.shape}")
    axes = (-3, -2, -1)
    x -= x.mean(axis=axes, keepdims=True)
    x /= x.std(axis=axes, keepdims=True) + 1e-5
    x = np.clip(x * spread + 0.5, 0.0, 1.0) * 255.0
    return np.clip(x, 0, 255).astype(np.uint8)


def check_finite(array: np.ndarray | jax.Array, what: str) -> None:
    """Raise :class:`ImageError` if ``array`` holds NaN or infinity (``what`` names it in the message)."""
    if not bool(np.isfinite(np.asarray(array)).all()):
        raise ImageError(None, f"{what} holds NaN or infinite values")


def clip_image(pixels: jax.Array | np.ndarray) -> np.ndarray:
    """Pixel values already on the 0-255 scale as ``uint8``: rounded and clipped, nothing rescaled."""
    return np.clip(np.round(np.asarray(pixels, np.float32)), 0, 255).astype(np.uint8)


ALPHA_PERCENTILE = 80.0
"""Attribution at or above this percentile of an image's is fully opaque (MaCo's display, Fel et al.)."""


def alpha_map(attribution: jax.Array) -> jax.Array:
    """``float32[..., H, W]`` summed absolute pixel gradients -> transparency in [0, 1]: each map
    divided by its 80th percentile and clipped at 1, so that the most attributed fifth is opaque."""
    ceiling = jnp.percentile(attribution, ALPHA_PERCENTILE, axis=(-2, -1), keepdims=True)
    return jnp.clip(attribution / jnp.maximum(ceiling, 1e-30), 0.0, 1.0)
