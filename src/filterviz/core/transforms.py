"""Random transformations of the image before each step: ``(key, float32[H, W, 3]) -> float32[h, w, 3]``.

An image that still excites a filter after being shifted, scaled and rotated cannot rely on one exact
arrangement of pixels: these transforms are what turns the plain ascent's high-frequency noise into
recognisable structure (Lucid's "transformation robustness"). Each transform is a frozen dataclass
(static under ``jit``); its randomness comes only from the key it is given, so a seed fixes the result.
Output sizes depend only on the input size, never on the draw, which keeps every shape static.

Pixel values are on the 0-255 scale; areas a transform uncovers are filled with ``fill`` (mid grey).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.scipy import ndimage

from filterviz.errors import SettingError

Transform = Callable[[jax.Array, jax.Array], jax.Array]
MID_GREY = 127.5


def _affine(image: jax.Array, inverse: jax.Array, shift: jax.Array, fill: float) -> jax.Array:
    # Output pixel p samples the input at centre + inverse @ (p - centre) + shift, bilinearly.
    height, width = image.shape[:2]
    centre = jnp.array([(height - 1) / 2, (width - 1) / 2], jnp.float32)
    grid = jnp.stack(jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij"), -1)
    source = (grid - centre) @ inverse.T + centre + shift  # [H, W, 2]
    coordinates = [source[..., 0], source[..., 1]]

    def sample(plane: jax.Array) -> jax.Array:
        return ndimage.map_coordinates(plane, coordinates, order=1, mode="constant", cval=fill)

    return jax.vmap(sample, in_axes=-1, out_axes=-1)(image)


def _choose(key: jax.Array, values: Sequence[float]) -> jax.Array:
    return jnp.asarray(values, jnp.float32)[jax.random.randint(key, (), 0, len(values))]


@dataclasses.dataclass(frozen=True)
class Pad:
    """Pad ``width`` pixels on every side: ``[H, W, 3] -> [H + 2w, W + 2w, 3]``; ``mode`` as ``jnp.pad``."""

    width: int
    mode: str = "constant"
    fill: float = MID_GREY

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        pad = ((self.width, self.width), (self.width, self.width), (0, 0))
        if self.mode == "constant":
            return jnp.pad(image, pad, constant_values=self.fill)
        return jnp.pad(image, pad, mode=self.mode)


@dataclasses.dataclass(frozen=True)
class Jitter:
    """A random crop ``distance`` pixels smaller: ``[H, W, 3] -> [H - d, W - d, 3]``, offsets in ``0..d``."""

    distance: int

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        height, width = image.shape[:2]
        if self.distance >= min(height, width):
            raise SettingError(f"jitter of {self.distance} pixels leaves nothing of a {height}x{width} image")
        dy, dx = jax.random.randint(key, (2,), 0, self.distance + 1)
        size = (height - self.distance, width - self.distance, image.shape[2])
        return jax.lax.dynamic_slice(image, (dy, dx, 0), size)


@dataclasses.dataclass(frozen=True)
class RandomScale:
    """Zoom about the centre by a factor drawn from ``scales``; the size stays ``[H, W, 3]``."""

    scales: tuple[float, ...]
    fill: float = MID_GREY

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        scale = _choose(key, self.scales)
        return _affine(image, jnp.eye(2) / scale, jnp.zeros(2), self.fill)


@dataclasses.dataclass(frozen=True)
class RandomRotate:
    """Rotate about the centre by an angle in degrees drawn from ``angles``; the size stays the same."""

    angles: tuple[float, ...]
    fill: float = MID_GREY

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        radians = _choose(key, self.angles) * (math.pi / 180.0)
        cos, sin = jnp.cos(radians), jnp.sin(radians)
        inverse = jnp.array([[cos, sin], [-sin, cos]])  # the rotation by -angle
        return _affine(image, inverse, jnp.zeros(2), self.fill)


@dataclasses.dataclass(frozen=True)
class RandomCrop:
    """MaCo's crop: a square box of ``box`` (min, max) times the side, centred near the middle (sd
    ``centre_sd`` of the side, kept inside the image), resized back to ``[H, W, 3]``."""

    box: tuple[float, float] = (0.5, 0.9)
    centre_sd: float = 0.15

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        size_key, centre_key = jax.random.split(key)
        height, width = image.shape[:2]
        fraction = jax.random.uniform(size_key, (), jnp.float32, self.box[0], self.box[1])
        half = fraction / 2
        centre = jnp.clip(0.5 + self.centre_sd * jax.random.normal(centre_key, (2,)), half, 1 - half)
        shift = (centre - 0.5) * jnp.array([height - 1, width - 1], jnp.float32)
        return _affine(image, jnp.eye(2) * fraction, shift, MID_GREY)


@dataclasses.dataclass(frozen=True)
class Noise:
    """Add Gaussian noise of ``std`` and uniform noise of width ``std`` (pixel units), as MaCo does."""

    std: float

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        normal_key, uniform_key = jax.random.split(key)
        normal = jax.random.normal(normal_key, image.shape, image.dtype)
        uniform = jax.random.uniform(uniform_key, image.shape, image.dtype, -0.5, 0.5)
        return image + self.std * (normal + uniform)


def compose(transforms: Sequence[Transform]) -> Transform:
    """One transform that applies ``transforms`` in order, each with its own key split from the one given."""
    transforms = tuple(transforms)

    def composed(key: jax.Array, image: jax.Array) -> jax.Array:
        for transform, subkey in zip(
            transforms, jax.random.split(key, max(1, len(transforms))), strict=False
        ):
            image = transform(subkey, image)
        return image

    return composed


LUCID_SCALES = tuple(1 + (i - 5) / 50 for i in range(11))
LUCID_ANGLES = tuple(float(a) for a in range(-10, 11)) + 5 * (0.0,)
STANDARD: tuple[Transform, ...] = (
    Pad(12, fill=MID_GREY),
    Jitter(8),
    RandomScale(LUCID_SCALES),
    RandomRotate(LUCID_ANGLES),
    Jitter(4),
)
"""Lucid's ``standard_transforms``: pad 12 (grey), jitter 8, scale 0.9-1.1, rotate -10..10°, jitter 4."""
