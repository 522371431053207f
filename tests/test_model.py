"""The Flax VGG16: names, shapes, parameter count, summary, the early-stopping forward, one-channel head."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import filterviz
from filterviz.model import (
    CONV_LAYERS,
    LAYER_NAMES,
    LAYERS,
    channel_activation,
    conv3x3,
    forward,
    output_size,
    parameter_count,
    summary,
)


def test_layer_names_and_parameter_count_match_keras(keras_vgg16):
    keras_names = [layer.name for layer in keras_vgg16.layers[1:]]
    assert list(LAYER_NAMES) == keras_names
    assert parameter_count() == keras_vgg16.count_params() == 14_714_688
    for layer in keras_vgg16.layers[1:]:
        assert parameter_count(layer.name) == layer.count_params(), layer.name


def test_parameters_of_the_flax_module_match_the_count(random_params):
    sizes = [leaf.size for leaf in jax.tree_util.tree_leaves(random_params)]
    assert sum(sizes) == 14_714_688
    assert set(random_params) == set(CONV_LAYERS)


@pytest.mark.parametrize("height, width", [(224, 224), (50, 77), (7, 9)])
def test_output_shapes_match_keras_for_any_size(keras_vgg16, random_params, height, width):
    import keras

    images = jnp.zeros((1, height, width, 3))
    ours = forward(random_params, images, LAYER_NAMES)
    every_layer = keras.Model(keras_vgg16.inputs, [layer.output for layer in keras_vgg16.layers[1:]])
    for layer, expected in zip(
        keras_vgg16.layers[1:], every_layer(np.zeros((1, height, width, 3))), strict=True
    ):
        assert ours[layer.name].shape == tuple(expected.shape), layer.name
        assert ours[layer.name].shape[1:3] == output_size(layer.name, height, width)


def test_forward_stops_at_the_requested_layer(random_params):
    only_block1 = {name: random_params[name] for name in ("block1_conv1", "block1_conv2")}
    images = jnp.ones((2, 16, 16, 3))
    # Parameters of later layers are not even needed: nothing past block1_pool is built.
    out = forward(only_block1, images, ["block1_pool"])
    assert out["block1_pool"].shape == (2, 8, 8, 64)
    jaxpr = jax.make_jaxpr(lambda p, x: forward(p, x, ["block2_conv1"]))(random_params, images)
    assert str(jaxpr).count("conv_general_dilated") == 3


def test_forward_returns_every_requested_layer(random_params):
    images = jax.random.normal(jax.random.key(1), (1, 32, 32, 3))
    out = forward(random_params, images, ["block1_conv2", "block3_pool"])
    assert set(out) == {"block1_conv2", "block3_pool"}
    alone = forward(random_params, images, ["block1_conv2"])["block1_conv2"]
    np.testing.assert_array_equal(out["block1_conv2"], alone)


@pytest.mark.parametrize(
    "layer", ["block1_conv1", "block1_conv2", "block2_pool", "block3_conv2", "block5_pool"]
)
def test_channel_activation_equals_the_full_layer(random_params, layer):
    images = 127 + 10 * jax.random.normal(jax.random.key(2), (2, 40, 36, 3))
    full = forward(random_params, images, [layer])[layer]
    for channel in (0, 5, full.shape[-1] - 1):
        one = channel_activation(random_params, images, layer, channel)
        scale = float(jnp.abs(full[..., channel]).max()) + 1e-6
        np.testing.assert_allclose(one, full[..., channel], rtol=0, atol=1e-5 * scale)


def test_conv3x3_gradients_equal_jax_convolution_gradients():
    keys = jax.random.split(jax.random.key(3), 3)
    images = jax.random.normal(keys[0], (2, 9, 11, 5))
    kernel = jax.random.normal(keys[1], (3, 3, 5, 7))
    cotangent = jax.random.normal(keys[2], (2, 9, 11, 7))

    def reference(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    np.testing.assert_allclose(conv3x3(images, kernel), reference(images, kernel), rtol=1e-6, atol=1e-5)
    ours = jax.vjp(conv3x3, images, kernel)[1](cotangent)
    theirs = jax.vjp(reference, images, kernel)[1](cotangent)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_summary_matches_the_keras_table_layout():
    unknown = summary()
    assert "input_1 (InputLayer)         (None, None, None, 3)     0" in unknown
    assert "block5_conv3 (Conv2D)        (None, None, None, 512)   2359808" in unknown
    assert "Total params: 14,714,688" in unknown
    sized = summary(224, 224)
    assert "block5_pool (MaxPooling2D)   (None, 7, 7, 512)         0" in sized
    assert "block1_conv1 (Conv2D)        (None, 224, 224, 64)      1792" in sized
    assert len([line for line in sized.splitlines() if "(Conv2D)" in line]) == 13
    assert "(None, 3, 4, 512)" in summary(100, 150).splitlines()[-6]


def test_unknown_layer_lists_the_valid_names():
    with pytest.raises(filterviz.UnknownLayerError) as caught:
        filterviz.layer_spec("block6_conv1")
    assert isinstance(caught.value, KeyError)
    message = str(caught.value)
    assert "block6_conv1" in message and all(spec.name in message for spec in LAYERS)


def test_flipped_kernels_change_nothing_but_speed(random_params):
    from filterviz.model import with_flipped_kernels
    from filterviz.objectives import filter_mean

    prepared = with_flipped_kernels(random_params)
    image = 127 + 10 * jax.random.normal(jax.random.key(4), (24, 24, 3))
    np.testing.assert_array_equal(
        forward(prepared, image[None], ["block3_conv1"])["block3_conv1"],
        forward(random_params, image[None], ["block3_conv1"])["block3_conv1"],
    )
    gradient = jax.grad(filter_mean, argnums=3)
    np.testing.assert_allclose(
        gradient(prepared, "block3_conv1", 5, image),
        gradient(random_params, "block3_conv1", 5, image),
        atol=1e-6,
    )
