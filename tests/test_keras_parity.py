"""filterviz against Keras itself (JAX backend, same H5 file): activations and the notebook's ascent.

Bit-identity is impossible for the ascent: ReLU switching amplifies float rounding over 20 steps. So the
bar is Keras' own sensitivity: how far Keras' result moves when its start moves by 1e-4. Ours must land
at least as close to Keras' result as that, both in the pixel displacement (correlation) and in the
deprocessed uint8 pictures (mean absolute difference). The sensitivity is the median over three random
nudges: one nudge's distance varies between nudges by as much as ours differs from Keras' (on
block4_conv1 filter 0, six nudges gave correlations of 0.9942 to 0.9963 and ours 0.9961), so a single
draw made the bar a coin toss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import filterviz
from support import relative_error

CONV_LAYERS = [layer.name for layer in filterviz.network("vgg16").layers if layer.kind == "Conv2D"]


def displacement_correlation(a, b, start) -> float:
    a = (np.asarray(a, np.float64) - start).ravel()
    b = (np.asarray(b, np.float64) - start).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def picture_difference(a, b) -> float:
    return float(
        np.abs(filterviz.as_image(a).astype(np.int16) - filterviz.as_image(b).astype(np.int16)).mean()
    )


def keras_ascent(
    keras_vgg16, layer: str, filter_index: int, start: np.ndarray, steps: int = 20
) -> np.ndarray:
    """The notebook's loop, written with Keras: one gradient call per step, gradient / (RMS + 1e-5)."""
    import keras

    extractor = keras.Model(keras_vgg16.inputs, keras_vgg16.get_layer(layer).output)

    def loss(images):
        return keras.ops.mean(extractor(images)[:, :, :, filter_index])

    gradient_of = jax.jit(jax.grad(loss))
    images = jnp.asarray(start)[None]
    for _ in range(steps):
        gradient = gradient_of(images)
        images = images + gradient / (jnp.sqrt(jnp.mean(jnp.square(gradient))) + 1e-5)
    return np.asarray(images[0])


@pytest.mark.parametrize("height, width", [(64, 64), (45, 70)])
def test_activations_agree_with_keras_at_every_conv_layer(params, keras_vgg16, height, width):
    import keras

    images = np.asarray([filterviz.random_image(jax.random.key(seed), height, width) for seed in range(2)])
    every_conv = keras.Model(keras_vgg16.inputs, [keras_vgg16.get_layer(name).output for name in CONV_LAYERS])
    for layer, theirs in zip(CONV_LAYERS, every_conv(images), strict=True):
        ours = filterviz.activations(params, images, layer)
        assert ours.shape == theirs.shape
        assert relative_error(ours, theirs) <= 1e-5, layer


def live_filters(params, layer: str, start, count: int) -> list[int]:
    """The first ``count`` filters that respond to the start at all (a dead filter has no gradient)."""
    means = np.asarray(filterviz.activations(params, start, layer)[0].mean(axis=(0, 1)))
    return [int(index) for index in np.flatnonzero(means > 0)[:count]]


NUDGE_SEEDS = (2, 3, 4)


def nudges(shape, size: float = 1e-4) -> list[np.ndarray]:
    """The random nudges of a start that measure an ascent's own sensitivity (see the module docstring)."""
    return [size * np.asarray(jax.random.normal(jax.random.key(seed), shape)) for seed in NUDGE_SEEDS]


def sensitivity(run, start, reference) -> tuple[float, float]:
    """How far ``reference = run(start)`` moves when ``start`` is nudged: the median, over :func:`nudges`,
    of the correlation of the pixel displacement and of the uint8 pictures' mean absolute difference."""
    moved = [run(start + nudge) for nudge in nudges(np.shape(start))]
    return (
        float(np.median([displacement_correlation(reference, other, start) for other in moved])),
        float(np.median([picture_difference(reference, other) for other in moved])),
    )


def ascent_parity(params, keras_vgg16, layer: str, filter_index: int, start) -> dict:
    """The figures of one filter's parity: ours against Keras, and Keras against its nudged self."""
    theirs = keras_ascent(keras_vgg16, layer, filter_index, start)
    keras_correlation, keras_difference = sensitivity(
        lambda image: keras_ascent(keras_vgg16, layer, filter_index, image), start, theirs
    )
    ours = np.asarray(filterviz.ascend(params, layer, [filter_index], start, steps=20)[0])
    return {
        "ours": ours,
        "correlation": displacement_correlation(ours, theirs, start),
        "keras_correlation": keras_correlation,
        "difference": picture_difference(ours, theirs),
        "keras_difference": keras_difference,
    }


PARITY_CASES = [("block1_conv1", 64), ("block2_conv2", 64), ("block4_conv1", 64), ("block5_conv3", 96)]


@pytest.mark.parametrize("layer, size", PARITY_CASES)
def test_ascent_lands_as_close_to_keras_as_keras_to_itself(params, keras_vgg16, layer, size):
    start = np.asarray(filterviz.random_image(jax.random.key(1), size, size))
    for filter_index in live_filters(params, layer, start, 2):
        parity = ascent_parity(params, keras_vgg16, layer, filter_index, start)
        assert parity["correlation"] >= parity["keras_correlation"], (layer, filter_index)
        assert parity["difference"] <= parity["keras_difference"], (layer, filter_index)
        # And the ascent did work: the filter fires far more strongly than at the start.
        before = filterviz.activations(params, start, layer)[0, ..., filter_index].mean()
        after = filterviz.activations(params, parity["ours"], layer)[0, ..., filter_index].mean()
        assert after > 2 * before


@pytest.mark.parametrize("layer", ["block2_conv1", "block4_conv2"])
def test_batched_and_one_by_one_ascent_agree(params, keras_vgg16, layer):
    start = np.asarray(filterviz.random_image(jax.random.key(3), 64, 64))
    nudge = 1e-4 * np.asarray(jax.random.normal(jax.random.key(4), start.shape))
    filters = live_filters(params, layer, start, 4)
    batched = np.asarray(filterviz.ascend(params, layer, filters, start, steps=20, batch_size=4))
    nudged = np.asarray(filterviz.ascend(params, layer, filters, start + nudge, steps=20, batch_size=4))
    for position, filter_index in enumerate(filters):
        alone = np.asarray(filterviz.ascend(params, layer, [filter_index], start, steps=20, batch_size=1)[0])
        sensitivity = displacement_correlation(batched[position], nudged[position], start)
        assert displacement_correlation(alone, batched[position], start) >= sensitivity
        assert picture_difference(alone, batched[position]) <= picture_difference(
            batched[position], nudged[position]
        )
