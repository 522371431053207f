"""Print the measured agreement with Keras (JAX backend): the figures the parity tests bound.

    PYTHONPATH=src python bench/parity_report.py

VGG16, on the real ImageNet weights (the same H5 file for both): for every conv layer, the relative
error of the activations; for a few filters of shallow and deep layers, a 20-step ascent from the same
start by filterviz and by Keras (the notebook's loop), compared with how far Keras' own result moves when
its start is nudged by 1e-4 (the median over three nudges) - correlation of the pixel displacement, and
mean absolute difference of the uint8 pictures.

VGG19 and ResNet50, on weights Keras itself writes (its random initialisation, batch-norm statistics
drawn at random), loaded from both layouts: the worst relative error over every named layer.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"

import jax
import keras
import numpy as np

import filterviz
from filterviz.networks.weights import find_weights
from measures import relative_error
from parity import PARITY_CASES, ascent_parity, keras_random_network, layer_errors_against_keras, live_filters


def main() -> None:
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
    for layer, size in PARITY_CASES:
        start = np.asarray(filterviz.random_image(jax.random.key(1), size, size))
        for index in live_filters(params, layer, start, 2):
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


if __name__ == "__main__":
    main()
