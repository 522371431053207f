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

from filterviz.errors import SettingError

Transform = Callable[[jax.Array, jax.Array], jax.Array]
MID_GREY = 127.5


Geometry = tuple[int, int, jax.Array]
"""``(out_height, out_width, matrix)``: output pixel ``(y, x, 1)`` samples the input at ``matrix @ (y, x, 1)``
(bilinearly, by :func:`resample`)."""


def _translation(dy, dx) -> jax.Array:
    return jnp.array([[1.0, 0.0, dy], [0.0, 1.0, dx], [0.0, 0.0, 1.0]], jnp.float32)


def _about_centre(height: int, width: int, linear: jax.Array, shift: jax.Array) -> jax.Array:
    # Output pixel p samples centre + linear @ (p - centre) + shift, the centre of an H x W image.
    centre = jnp.array([(height - 1) / 2, (width - 1) / 2], jnp.float32)
    offset = centre - linear @ centre + shift
    return jnp.block([[linear, offset[:, None]], [jnp.zeros((1, 2)), jnp.ones((1, 1))]]).astype(jnp.float32)


def resample(image: jax.Array, geometry: Geometry, fill: float = MID_GREY) -> jax.Array:
    """Bilinear sampling of ``float32[H, W, C]`` on the grid ``geometry`` gives: ``[h, w, C]``.

    Samples outside the image read ``fill``. Each of a point's four neighbours is one gather of all its
    channels (a per-channel ``map_coordinates`` is three), which keeps the compiled program small and
    fast: a chain of shifts, zooms and turns costs one of these per step (:func:`compose`).
    """
    height, width, matrix = geometry
    rows, columns = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    points = jnp.stack([rows, columns, jnp.ones_like(rows)], -1).astype(jnp.float32) @ matrix[:2].T
    # A border of fill one pixel wide; points beyond it are moved onto it, where they read only fill.
    framed = jnp.pad(image, ((1, 1), (1, 1), (0, 0)), constant_values=fill)
    limit = jnp.array(image.shape[:2], jnp.float32)
    points = jnp.clip(points + 1, 0, limit + 1)
    low = jnp.minimum(jnp.floor(points), limit)
    fraction = points - low
    index = low.astype(jnp.int32)
    y, x = index[..., 0], index[..., 1]
    along_y, along_x = fraction[..., 0:1], fraction[..., 1:2]
    top = (1 - along_x) * framed[y, x] + along_x * framed[y, x + 1]
    bottom = (1 - along_x) * framed[y + 1, x] + along_x * framed[y + 1, x + 1]
    return (1 - along_y) * top + along_y * bottom


def _choose(key: jax.Array, values: Sequence[float]) -> jax.Array:
    return jnp.asarray(values, jnp.float32)[jax.random.randint(key, (), 0, len(values))]


class _Resampled:
    # A transform that is its geometry alone: the image sampled on its grid, areas uncovered ``fill``.
    fill: float

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        return resample(image, self.geometry(key, *image.shape[:2]), self.fill)

    def geometry(self, key: jax.Array, height: int, width: int) -> Geometry:
        raise NotImplementedError


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

    def geometry(self, key: jax.Array, height: int, width: int) -> Geometry | None:
        if self.mode != "constant":
            return None  # reflections are not a resampling of the plane
        return height + 2 * self.width, width + 2 * self.width, _translation(-self.width, -self.width)


@dataclasses.dataclass(frozen=True)
class Jitter:
    """A random crop ``distance`` pixels smaller: ``[H, W, 3] -> [H - d, W - d, 3]``, offsets in ``0..d``."""

    distance: int

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        height, width = image.shape[:2]
        dy, dx = self._offsets(key, height, width)
        size = (height - self.distance, width - self.distance, image.shape[2])
        return jax.lax.dynamic_slice(image, (dy, dx, 0), size)

    def geometry(self, key: jax.Array, height: int, width: int) -> Geometry:
        dy, dx = self._offsets(key, height, width)
        return height - self.distance, width - self.distance, _translation(dy, dx)

    def _offsets(self, key: jax.Array, height: int, width: int) -> jax.Array:
        if self.distance >= min(height, width):
            raise SettingError(f"jitter of {self.distance} pixels leaves nothing of a {height}x{width} image")
        return jax.random.randint(key, (2,), 0, self.distance + 1)


@dataclasses.dataclass(frozen=True)
class RandomScale(_Resampled):
    """Zoom about the centre by a factor drawn from ``scales``; the size stays ``[H, W, 3]``."""

    scales: tuple[float, ...]
    fill: float = MID_GREY

    def geometry(self, key: jax.Array, height: int, width: int) -> Geometry:
        linear = jnp.eye(2) / _choose(key, self.scales)
        return height, width, _about_centre(height, width, linear, jnp.zeros(2))


@dataclasses.dataclass(frozen=True)
class RandomRotate(_Resampled):
    """Rotate about the centre by an angle in degrees drawn from ``angles``; the size stays the same."""

    angles: tuple[float, ...]
    fill: float = MID_GREY

    def geometry(self, key: jax.Array, height: int, width: int) -> Geometry:
        radians = _choose(key, self.angles) * (math.pi / 180.0)
        cos, sin = jnp.cos(radians), jnp.sin(radians)
        inverse = jnp.array([[cos, sin], [-sin, cos]])  # the rotation by -angle
        return height, width, _about_centre(height, width, inverse, jnp.zeros(2))


@dataclasses.dataclass(frozen=True)
class RandomCrop(_Resampled):
    """MaCo's crop: a square box of ``box`` (min, max) times the side, centred near the middle (sd
    ``centre_sd`` of the side, kept inside the image), resized back to ``[H, W, 3]``."""

    box: tuple[float, float] = (0.5, 0.9)
    centre_sd: float = 0.15
    fill: float = MID_GREY

    def geometry(self, key: jax.Array, height: int, width: int) -> Geometry:
        size_key, centre_key = jax.random.split(key)
        fraction = jax.random.uniform(size_key, (), jnp.float32, self.box[0], self.box[1])
        half = fraction / 2
        centre = jnp.clip(0.5 + self.centre_sd * jax.random.normal(centre_key, (2,)), half, 1 - half)
        shift = (centre - 0.5) * jnp.array([height - 1, width - 1], jnp.float32)
        return height, width, _about_centre(height, width, jnp.eye(2) * fraction, shift)


@dataclasses.dataclass(frozen=True)
class View(_Resampled):
    """The network's viewing scale: the image resized (bilinear, corners aligned) so that its longer
    side is ``side`` pixels, ``[H, W, 3] -> [h, w, 3]`` with ``max(h, w) = side``. Lucent views a
    picture smaller than 224 px at 224 this way; MaCo views each crop at the network's input size."""

    side: int
    fill: float = MID_GREY

    def viewed(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of a viewed ``height x width`` image."""
        scale = self.side / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def geometry(self, key: jax.Array, height: int, width: int) -> Geometry:
        out_height, out_width = self.viewed(height, width)
        steps = [(size - 1) / max(out - 1, 1) for size, out in ((height, out_height), (width, out_width))]
        return out_height, out_width, jnp.diag(jnp.array([*steps, 1.0], jnp.float32))


def with_view(transforms: Sequence[Transform], side: int | None) -> tuple[Transform, ...]:
    """``transforms`` with :class:`View` ``(side)`` after the last geometric one (before noise, which
    is then drawn at the viewed size); unchanged when ``side`` is None."""
    transforms = tuple(transforms)
    if side is None:
        return transforms
    geometric = [index for index, transform in enumerate(transforms) if hasattr(transform, "geometry")]
    at = geometric[-1] + 1 if geometric else 0
    return (*transforms[:at], View(side), *transforms[at:])


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
    """One transform that applies ``transforms`` in order, each with its own key split from the one given.

    Consecutive geometric transforms (constant pads, jitters, zooms, turns, crops: those with a
    ``geometry``) are one resampling: their grids are multiplied and the image is sampled once, which
    blurs less than sampling after each and compiles to a smaller program.
    """
    transforms = tuple(transforms)

    def composed(key: jax.Array, image: jax.Array) -> jax.Array:
        keys = jax.random.split(key, max(1, len(transforms)))
        pending: Geometry | None = None  # the geometric transforms met since the last sampling
        fill = MID_GREY
        for transform, subkey in zip(transforms, keys, strict=False):
            height, width = pending[:2] if pending else image.shape[:2]
            geometry = transform.geometry(subkey, height, width) if hasattr(transform, "geometry") else None
            if geometry is not None:
                if pending is not None and getattr(transform, "fill", fill) != fill:
                    image, pending = resample(image, pending, fill), None  # each area keeps its own fill
                fill = getattr(transform, "fill", fill)
                pending = geometry if pending is None else (*geometry[:2], pending[2] @ geometry[2])
                continue
            image = _sampled(image, pending, fill)
            pending = None
            image = transform(subkey, image)
        return _sampled(image, pending, fill)

    return composed


def _sampled(image: jax.Array, pending: Geometry | None, fill: float) -> jax.Array:
    return image if pending is None else resample(image, pending, fill)


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
WIDE_SCALES = tuple(0.73 + 0.054 * i for i in range(11))
WIDE: tuple[Transform, ...] = tuple(
    RandomScale(WIDE_SCALES) if isinstance(transform, RandomScale) else transform for transform in STANDARD
)
"""Lucid's standard transforms with the scale widened to 0.73-1.27. With ``view=176`` a 128-pixel
picture is seen at 1.0 to 1.75 times its own scale, the range from its own size to 224 pixels, so it
holds up viewed at either (QUALITY.md, "Viewing scale")."""
TRANSFORM_SETS: dict[str, tuple[Transform, ...]] = {"none": (), "standard": STANDARD, "wide": WIDE}
"""The named transform sets (the command line's ``--transforms``)."""
