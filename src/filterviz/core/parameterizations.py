"""Parameterizations: what the ascent actually optimises, and how it becomes an image.

Each parameterization is a frozen (hashable, so static under ``jit``) dataclass with two pure functions:

* ``init(key, count, height, width) -> variables``: the starting variables of ``count`` images;
* ``to_pixels(variables, height, width) -> float32[count, height, width, 3]``: RGB values on the 0-255 scale
  (the size is passed in because a real FFT's half-spectrum does not tell odd widths from even ones).

:class:`Pixels` optimises the pixels themselves (the notebook). :class:`Fourier` optimises a spectrum
whose frequencies are scaled by ``1 / f`` and whose colours are decorrelated, squashed into 0-255 by a
sigmoid (Lucid's default image). :class:`Maco` fixes the spectrum's magnitude to that of natural images
and optimises only its phase (MaCo, Fel et al. 2023).

What the network is then fed from the pixels (its preprocessing) is the network's business:
:func:`filterviz.core.network.preprocess`.
"""

from __future__ import annotations

import dataclasses
import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from filterviz.core.network import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
from filterviz.errors import SettingError

# Square root of the colour covariance of ImageNet images (the columns are its principal colour axes):
# the statistics Lucid and MaCo decorrelate colours with.
COLOR_CORRELATION_SQRT = np.array(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32
)
_COLOR_MIX = COLOR_CORRELATION_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SQRT, axis=0))


def recorrelate_colors(decorrelated: jax.Array) -> jax.Array:
    """``float32[..., 3]`` in the decorrelated colour basis -> RGB (Lucid's ``_linear_decorrelate_color``)."""
    return decorrelated @ jnp.asarray(_COLOR_MIX.T)


def frequency_magnitudes(height: int, width: int) -> np.ndarray:
    """``|f|`` in cycles per pixel of each coefficient of an ``rfft2`` of an ``height x width`` image."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    return np.sqrt(fy * fy + fx * fx).astype(np.float32)


def _standardize(values: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    values = values - jnp.mean(values, axis=axes, keepdims=True)
    return values / (jnp.std(values, axis=axes, keepdims=True) + 1e-4)


@dataclasses.dataclass(frozen=True)
class Pixels:
    """The pixels themselves, unconstrained; the notebook's parameterization.

    ``init`` draws noise around ``mean``: Gaussian with ``std`` (the notebook's start) or, with
    ``uniform``, uniform in ``mean ± std`` (the Keras example's ``(random - 0.5) * 20 + 128``).
    """

    mean: float = 127.0
    std: float = 10.0
    uniform: bool = False

    def init(self, key: jax.Array, count: int, height: int, width: int) -> jax.Array:
        shape = (count, height, width, 3)
        if self.uniform:
            return self.mean + self.std * jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0)
        return self.mean + self.std * jax.random.normal(key, shape, jnp.float32)

    def to_pixels(self, variables: jax.Array, height: int, width: int) -> jax.Array:
        return variables

    def from_pixels(self, pixels: jax.Array) -> jax.Array:
        """The variables that give ``pixels``: a start image, e.g. a photo."""
        return pixels


@dataclasses.dataclass(frozen=True)
class Fourier:
    """Lucid's default image: a ``1/f^decay_power``-scaled spectrum, decorrelated colours, a sigmoid.

    Raw variables: ``float32[count, 3, height, width // 2 + 1, 2]`` (real and imaginary parts), drawn
    from ``N(0, sd)``. Each spatial image is divided by 4 before the colours are mixed, as in Lucid.
    """

    sd: float = 0.01
    decay_power: float = 1.0
    decorrelate: bool = True

    def init(self, key: jax.Array, count: int, height: int, width: int) -> jax.Array:
        shape = (count, 3, height, width // 2 + 1, 2)
        return self.sd * jax.random.normal(key, shape, jnp.float32)

    def to_pixels(self, variables: jax.Array, height: int, width: int) -> jax.Array:
        frequencies = frequency_magnitudes(height, width)
        # Scale each frequency by 1/f (never above the lowest non-zero frequency's), and by sqrt(h*w) so
        # that irfft2's 1/(h*w) leaves an orthonormal transform: equal energy at every scale.
        scale = 1.0 / np.maximum(frequencies, 1.0 / max(height, width)) ** self.decay_power
        scale = jnp.asarray(scale * np.sqrt(height * width))
        spectrum = jax.lax.complex(variables[..., 0], variables[..., 1]) * scale
        spatial = jnp.fft.irfft2(spectrum, s=(height, width)) / 4.0  # [count, 3, H, W]
        return _to_valid_pixels(jnp.moveaxis(spatial, 1, -1), self.decorrelate)


SPECTRUM_SIZE = 512
"""Side of the images a :class:`Spectrum` is computed at, as MaCo's published ImageNet spectrum."""


@dataclasses.dataclass(frozen=True, eq=False)
class Spectrum:
    """A natural-image magnitude spectrum: ``float32[3, S, S // 2 + 1]``, the mean ``|rfft2|`` of each
    decorrelated colour channel of ``S x S`` photos (see :func:`decorrelate_colors`), finite and not
    negative. Equal (and hashed, so static under ``jit``) by content; ``source`` says where it came
    from. Read, fetched and computed from photos at the edges by :mod:`filterviz.io.spectrum`."""

    magnitude: np.ndarray
    source: str = "array"
    sha256: str = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        magnitude = np.asarray(self.magnitude)
        shape = magnitude.shape
        if magnitude.ndim != 3 or shape[0] != 3 or shape[2] != shape[1] // 2 + 1 or shape[1] < 2:
            raise SettingError(f"a magnitude spectrum is [3, S, S // 2 + 1], got {shape}")
        if not np.issubdtype(magnitude.dtype, np.number) or np.iscomplexobj(magnitude):
            raise SettingError(f"a magnitude spectrum holds real numbers, got {magnitude.dtype}")
        magnitude = magnitude.astype(np.float32)
        if not np.isfinite(magnitude).all() or (magnitude < 0).any() or not magnitude.any():
            raise SettingError("a magnitude spectrum must be finite, not negative and not all zero")
        magnitude.setflags(write=False)
        object.__setattr__(self, "magnitude", magnitude)
        object.__setattr__(self, "sha256", hashlib.sha256(magnitude.astype("<f4").tobytes()).hexdigest())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Spectrum) and other.sha256 == self.sha256

    def __hash__(self) -> int:
        return hash(self.sha256)

    def __repr__(self) -> str:
        return f"Spectrum({self.source}, {list(self.magnitude.shape)}, sha256 {self.sha256[:16]})"

    def resized(self, height: int, width: int) -> np.ndarray:
        """The magnitude for an ``height x width`` image, ``float32[3, height, width // 2 + 1]``, resized
        as an image (bilinear, antialiased, as MaCo's implementations do), unit RMS."""
        shape = (3, height, width // 2 + 1)
        with jax.ensure_compile_time_eval():  # a constant of the program, even when asked while tracing
            resized = np.asarray(jax.image.resize(self.magnitude, shape, "linear", antialias=True))
        return (resized / np.sqrt(np.mean(resized**2))).astype(np.float32)


def decorrelate_colors(rgb: np.ndarray) -> np.ndarray:
    """``float32[..., 3]`` RGB -> the decorrelated colour basis :func:`recorrelate_colors` maps back."""
    return np.asarray(rgb, np.float32) @ np.linalg.inv(_COLOR_MIX.T).astype(np.float32)


def image_spectrum(rgb: np.ndarray) -> np.ndarray:
    """``|rfft2|`` of each decorrelated colour channel of ``float32[H, W, 3]`` RGB in 0-1:
    ``float32[3, H, W // 2 + 1]`` (a :class:`Spectrum` is the mean of these over photos)."""
    channels = np.moveaxis(decorrelate_colors(rgb), -1, 0)
    return np.abs(np.fft.rfft2(channels)).astype(np.float32)


IMAGENET = "imagenet"
"""The magnitude spectrum the MaCo authors publish (mean over ImageNet), fetched on first use."""


@dataclasses.dataclass(frozen=True)
class Maco:
    """Magnitude-constrained Fourier (MaCo, Fel et al., "Unlocking Feature Visualization for Deeper
    Networks with MAgnitude Constrained Optimization", NeurIPS 2023): a fixed natural-image magnitude,
    an optimised phase.

    Raw variables: the phase ``float32[count, 3, height, width // 2 + 1]`` from ``N(0, phase_sd)``. Each
    step the phase is standardised, combined with the magnitude, inverted, standardised again, its
    colours recorrelated and squashed by a sigmoid into ``values_range``.

    ``values_range`` is in ImageNet standard deviations about ImageNet's mean pixel, per channel: MaCo's
    ``values_range`` of (-2.5, 2.5) in the normalised input space its implementations feed, about
    -27 to 271 on the 0-255 scale. So its pixels reach a little past the valid range while they are
    optimised, as MaCo's do, and the picture is them clipped (the ``clip`` picture style). Squashed
    into 0-255 instead, the same filters reach about half the activation (BENCHMARKS.md, "Fidelity").

    ``spectrum`` is the magnitude: a :class:`Spectrum`; ``"imagenet"`` or a path to a ``.npy`` file,
    both read at the edges before any program runs (:func:`filterviz.io.spectrum.resolve_spectrum`,
    which :func:`filterviz.render` and sweeps call); or None for the ``1/f^magnitude_power`` law that
    natural images' amplitude spectra follow (Field, 1987), needing no file.
    """

    spectrum: Spectrum | str | None = IMAGENET
    phase_sd: float = 1.0
    magnitude_power: float = 1.0
    values_range: tuple[float, float] = (-2.5, 2.5)

    def __post_init__(self) -> None:
        low, high = (float(value) for value in self.values_range)
        object.__setattr__(self, "values_range", (low, high))  # hashable, for jit's static arguments
        if not low < high:
            raise SettingError(f"MaCo's values_range must rise, got {self.values_range}")

    def init(self, key: jax.Array, count: int, height: int, width: int) -> jax.Array:
        return self.phase_sd * jax.random.normal(key, (count, 3, height, width // 2 + 1), jnp.float32)

    def magnitude(self, height: int, width: int) -> np.ndarray:
        """The fixed magnitude, unit RMS: ``float32[3, height, width // 2 + 1]`` from the spectrum, or
        ``float32[height, width // 2 + 1]`` (every channel's) from the ``1/f`` law."""
        if isinstance(self.spectrum, Spectrum):
            return self.spectrum.resized(height, width)
        if self.spectrum is not None:
            raise SettingError(
                f"MaCo's spectrum {self.spectrum!r} is not loaded: pass the method through "
                "filterviz.io.spectrum.resolve_spectrum (filterviz.render does), or give a Spectrum"
            )
        frequencies = np.maximum(frequency_magnitudes(height, width), 1.0 / max(height, width))
        magnitude = frequencies**-self.magnitude_power
        return (magnitude / np.sqrt(np.mean(magnitude**2))).astype(np.float32)

    def to_pixels(self, variables: jax.Array, height: int, width: int) -> jax.Array:
        magnitude = jnp.asarray(self.magnitude(height, width))
        phase = _standardize(variables, (-3, -2, -1))
        spectrum = jax.lax.complex(jnp.cos(phase) * magnitude, jnp.sin(phase) * magnitude)
        spatial = _standardize(jnp.fft.irfft2(spectrum, s=(height, width)), (-3, -2, -1))
        low, high = self.values_range
        normalised = low + (high - low) * jax.nn.sigmoid(recorrelate_colors(jnp.moveaxis(spatial, 1, -1)))
        return 255.0 * (jnp.asarray(IMAGENET_MEAN_RGB) + jnp.asarray(IMAGENET_STD_RGB) * normalised)


def _to_valid_pixels(image: jax.Array, decorrelate: bool) -> jax.Array:
    # Lucid's to_valid_rgb: mix decorrelated colours back to RGB, then a sigmoid into the valid range.
    if decorrelate:
        image = recorrelate_colors(image)
    return 255.0 * jax.nn.sigmoid(image)


Parameterization = Pixels | Fourier | Maco
PARAMETERIZATIONS: dict[str, type] = {"pixels": Pixels, "fourier": Fourier, "maco": Maco}
