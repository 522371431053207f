"""Agreement with Keras, measured: the notebook's ascent written in Keras, how far an ascent moves when
its start is nudged (the self-calibrating bar of the parity tests), and Keras' own networks with random
weights, compared layer by layer. Used by the parity tests and ``bench/``;
``python tests/parity.py`` prints every figure.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import filterviz
from filterviz.core.network import Network
from filterviz.networks.weights import load_weights


def displacement_correlation(a: np.ndarray, b: np.ndarray, start: np.ndarray | float) -> float:
    """Correlation of two results' displacements from their common start (1.0: the same ascent)."""
    a, b = (np.asarray(a, np.float64) - start).ravel(), (np.asarray(b, np.float64) - start).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def relative_error(ours, theirs) -> float:
    """``|ours - theirs| / |theirs|`` over every value (Frobenius norms), in float64."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.linalg.norm(ours - theirs) / (np.linalg.norm(theirs) + 1e-30))


ROUNDING = 1e-6
"""What float32 rounding moves a displacement correlation by between runs (float32's resolution, 2**-23,
times the few roundings a step's reductions add; the order of those roundings depends on the threads)."""

PIXEL_ROUNDING = 0.01
"""What rounding moves a mean uint8 difference by between runs: one pixel value in a hundred flipped by
one level where a float lands next to a rounding boundary."""


def as_close(correlation: float, difference: float, bar_correlation: float, bar_difference: float) -> bool:
    """Whether a result is as close to the reference as the bar (the reference against its nudged self),
    up to the rounding the two measures carry between runs."""
    closer = (1 - correlation) <= (1 - bar_correlation) + ROUNDING
    return closer and difference <= bar_difference + PIXEL_ROUNDING


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


# Shallow, middle, deepest (layer, size, live filters): at block5_conv3 each Keras ascent costs most.
PARITY_CASES = [("block1_conv1", 64, 2), ("block2_conv2", 64, 2), ("block5_conv3", 64, 1)]


KERAS_APPLICATIONS = {"vgg16": "VGG16", "vgg19": "VGG19", "resnet50": "ResNet50"}


def _randomise_batch_norm(model, seed: int = 0) -> None:
    # Keras initialises batch norm to the identity; draw every statistic so that a comparison sees them.
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, variance = (w.shape for w in layer.get_weights())
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma).astype(np.float32),
                    rng.normal(0, 0.1, beta).astype(np.float32),
                    rng.normal(0, 0.1, mean).astype(np.float32),
                    rng.uniform(0.5, 2.0, variance).astype(np.float32),
                ]
            )


def keras_random_network(name: str, folder: Path):
    """Keras' own ``name`` (no top) with its random initialisation (batch-norm statistics drawn too),
    saved in both layouts: ``(model, keras3 .weights.h5, legacy whole-model .h5)``."""
    import keras

    application = getattr(keras.applications, KERAS_APPLICATIONS[name])
    model = application(weights=None, include_top=False, input_shape=(None, None, 3))
    _randomise_batch_norm(model)
    keras3 = folder / f"{name}.weights.h5"
    model.save_weights(keras3)
    legacy = folder / f"{name}_legacy.h5"
    model.save(legacy)  # Keras writes a whole .h5 model in the legacy layout (model_weights/...)
    return model, keras3, legacy


def layer_errors_against_keras(net: Network, model, files, height: int = 48, width: int = 40) -> dict:
    """``{layer: worst relative error}`` of ``net``'s activations at every layer Keras' ``model`` names,
    against Keras on the same two random images, with the weights loaded from each of ``files``."""
    import keras

    import filterviz

    names = [layer.name for layer in model.layers[1:]]
    images = np.asarray([filterviz.random_image(jax.random.key(seed), height, width) for seed in range(2)])
    inputs = images - 127.0  # centred, as a preprocessed image is
    theirs = keras.Model(model.inputs, [model.get_layer(n).output for n in names])(inputs)
    worst = dict.fromkeys(names, 0.0)
    for path in files:
        params = load_weights(path, network=net.name)
        ours = jax.jit(lambda p, x: net.apply(p, x, names))(params, inputs)
        for layer, expected in zip(names, theirs, strict=True):
            worst[layer] = max(worst[layer], relative_error(ours[layer], expected))
    return worst


def report() -> None:
    """Print every parity figure: VGG16 on its real weights, VGG19 and ResNet50 on Keras' random ones."""
    import keras

    from filterviz.networks.weights import find_weights

    vgg16 = filterviz.network("vgg16")
    conv_layers = [layer.name for layer in vgg16.layers if layer.kind == "Conv2D"]
    path = find_weights()
    params = filterviz.load_weights(path)
    base = keras.applications.VGG16(include_top=False, weights=str(path), input_shape=(None, None, 3))
    images = np.asarray([filterviz.random_image(jax.random.key(seed), 64, 64) for seed in range(2)])
    every_conv = keras.Model(base.inputs, [base.get_layer(name).output for name in conv_layers])
    print("VGG16, ImageNet weights\n\n| layer | activation relative error vs Keras |\n|---|---|")
    for layer, theirs in zip(conv_layers, every_conv(images), strict=True):
        print(f"| {layer} | {relative_error(filterviz.activations(params, images, layer), theirs):.1e} |")

    print(
        "\n| layer | filter | corr(ours, Keras) | corr(Keras, Keras nudged) | uint8 diff ours-Keras |"
        " uint8 diff Keras-nudged |\n|---|---|---|---|---|---|"
    )
    for layer, size, filters in PARITY_CASES:
        start = np.asarray(filterviz.random_image(jax.random.key(1), size, size))
        for index in live_filters(params, layer, start, filters):
            parity = ascent_parity(params, base, layer, index, start)
            names = ("correlation", "keras_correlation", "difference", "keras_difference")
            print(f"| {layer} | {index} | " + " | ".join(f"{parity[name]:.6f}" for name in names) + " |")

    print("\n| network (Keras' random weights, both layouts) | named layers | worst relative error | at |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name in ("vgg19", "resnet50"):
            model, keras3, legacy = keras_random_network(name, Path(folder))
            errors = layer_errors_against_keras(filterviz.network(name), model, (keras3, legacy))
            worst = max(errors, key=errors.get)
            print(f"| {name} | {len(errors)} | {errors[worst]:.1e} | {worst} |")


if __name__ == "__main__":  # python tests/parity.py
    report()
