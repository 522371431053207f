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

import jax
import jax.numpy as jnp
import numpy as np

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


@dataclasses.dataclass(frozen=True)
class Maco:
    """Magnitude-constrained Fourier (MaCo): a fixed natural-image magnitude, an optimised phase.

    Raw variables: the phase ``float32[count, 3, height, width // 2 + 1]`` from ``N(0, phase_sd)``. Each
    step the phase is standardised, combined with the magnitude, inverted, standardised again, its
    colours recorrelated and squashed into 0-255 by a sigmoid. The magnitude template is a ``1/f^power``
    spectrum, the law natural images' amplitude spectra follow (Field, 1987), standing in for the
    averaged ImageNet spectrum the MaCo authors download.
    """

    phase_sd: float = 1.0
    magnitude_power: float = 1.0

    def init(self, key: jax.Array, count: int, height: int, width: int) -> jax.Array:
        return self.phase_sd * jax.random.normal(key, (count, 3, height, width // 2 + 1), jnp.float32)

    def magnitude(self, height: int, width: int) -> np.ndarray:
        """The fixed magnitude ``float32[height, width // 2 + 1]``: ``1/f^power``, unit RMS."""
        frequencies = np.maximum(frequency_magnitudes(height, width), 1.0 / max(height, width))
        magnitude = frequencies**-self.magnitude_power
        return (magnitude / np.sqrt(np.mean(magnitude**2))).astype(np.float32)

    def to_pixels(self, variables: jax.Array, height: int, width: int) -> jax.Array:
        magnitude = jnp.asarray(self.magnitude(height, width))
        phase = _standardize(variables, (-3, -2, -1))
        spectrum = jax.lax.complex(jnp.cos(phase) * magnitude, jnp.sin(phase) * magnitude)
        spatial = _standardize(jnp.fft.irfft2(spectrum, s=(height, width)), (-3, -2, -1))
        return _to_valid_pixels(jnp.moveaxis(spatial, 1, -1), decorrelate=True)


def _to_valid_pixels(image: jax.Array, decorrelate: bool) -> jax.Array:
    # Lucid's to_valid_rgb: mix decorrelated colours back to RGB, then a sigmoid into the valid range.
    if decorrelate:
        image = recorrelate_colors(image)
    return 255.0 * jax.nn.sigmoid(image)


Parameterization = Pixels | Fourier | Maco
PARAMETERIZATIONS: dict[str, type] = {"pixels": Pixels, "fourier": Fourier, "maco": Maco}
