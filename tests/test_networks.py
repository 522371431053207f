"""Networks as values: VGG16 (names, shapes, parameter count, summary, the early-stopping forward, the
one-channel head), VGG19 and ResNet50 against Keras itself on weights Keras writes in both layouts, and
weights of one network refused as another's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import filterviz
from filterviz.networks import BUILTIN
from filterviz.networks.layers import conv2d
from filterviz.networks.vgg import with_flipped_kernels
from filterviz.networks.weights import load_weights
from parity import keras_random_network, layer_errors_against_keras

# ----------------------------------------------------------------------------------------------------
# VGG16


def test_layer_names_and_parameter_count_match_keras(vgg16, keras_vgg16):
    keras_names = [layer.name for layer in keras_vgg16.layers[1:]]
    assert list(vgg16.layer_names) == keras_names
    assert vgg16.parameter_count() == keras_vgg16.count_params() == 14_714_688
    for layer in keras_vgg16.layers[1:]:
        assert vgg16.parameter_count(layer.name) == layer.count_params(), layer.name
    assert len(vgg16.visual_layers) == 13 and all(
        name.split("_")[1].startswith("conv") for name in vgg16.visual_layers
    )


def test_parameters_of_the_flax_module_match_the_count(vgg16, random_params):
    sizes = [leaf.size for leaf in jax.tree_util.tree_leaves(random_params)]
    assert sum(sizes) == 14_714_688
    assert set(random_params) == set(vgg16.parameter_shapes)


@pytest.mark.parametrize("height, width", [(224, 224), (50, 77), (7, 9)])
def test_output_shapes_match_keras_for_any_size(vgg16, keras_vgg16, random_params, height, width):
    import keras

    images = jnp.zeros((1, height, width, 3))
    ours = vgg16.apply(random_params, images, vgg16.layer_names)
    every_layer = keras.Model(keras_vgg16.inputs, [layer.output for layer in keras_vgg16.layers[1:]])
    for layer, expected in zip(
        keras_vgg16.layers[1:], every_layer(np.zeros((1, height, width, 3))), strict=True
    ):
        assert ours[layer.name].shape == tuple(expected.shape), layer.name
        assert ours[layer.name].shape[1:3] == vgg16.output_size(layer.name, height, width)


def test_forward_stops_at_the_requested_layer(vgg16, random_params):
    only_block1 = {name: random_params[name] for name in ("block1_conv1", "block1_conv2")}
    images = jnp.ones((2, 16, 16, 3))
    # Parameters of later layers are not even needed: nothing past block1_pool is built.
    assert vgg16.apply(only_block1, images, ["block1_pool"])["block1_pool"].shape == (2, 8, 8, 64)
    jaxpr = jax.make_jaxpr(lambda p, x: vgg16.apply(p, x, ["block2_conv1"]))(random_params, images)
    assert str(jaxpr).count("conv_general_dilated") == 3


def test_forward_returns_every_requested_layer(vgg16, random_params):
    images = jax.random.normal(jax.random.key(1), (1, 32, 32, 3))
    out = vgg16.apply(random_params, images, ["block3_pool", "block1_conv2"])
    assert set(out) == {"block1_conv2", "block3_pool"}
    alone = vgg16.apply(random_params, images, ["block1_conv2"])["block1_conv2"]
    np.testing.assert_array_equal(out["block1_conv2"], alone)


@pytest.mark.parametrize(
    "layer", ["block1_conv1", "block1_conv2", "block2_pool", "block3_conv2", "block5_pool"]
)
def test_channel_activation_equals_the_full_layer(vgg16, random_params, layer):
    images = 127 + 10 * jax.random.normal(jax.random.key(2), (2, 40, 36, 3))
    full = vgg16.apply(random_params, images, [layer])[layer]
    for channel in (0, 5, full.shape[-1] - 1):
        one = vgg16.channel_activation(random_params, images, layer, channel)
        scale = float(jnp.abs(full[..., channel]).max()) + 1e-6
        np.testing.assert_allclose(one, full[..., channel], rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize(
    "height, width, size, stride, padding",
    # VGG's 3x3 'same'; ResNet50's 1x1 (stride 1 and 2, an odd size leaving a row unread) and 7x7 stride 2
    [(9, 11, 3, 1, "SAME"), (8, 8, 1, 1, "VALID"), (9, 8, 1, 2, "VALID"), (22, 21, 7, 2, "VALID")],
)
def test_conv2d_values_and_gradients_equal_jax_convolution(height, width, size, stride, padding):
    keys = jax.random.split(jax.random.key(3), 3)
    images = jax.random.normal(keys[0], (2, height, width, 5))
    kernel = jax.random.normal(keys[1], (size, size, 5, 7))

    def reference(x, k):
        return jax.lax.conv_general_dilated(
            x, k, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    def ours(x, k):
        return conv2d(x, k, stride=stride, padding=padding)

    expected = reference(images, kernel)
    np.testing.assert_allclose(ours(images, kernel), expected, rtol=1e-6, atol=1e-5)
    cotangent = jax.random.normal(keys[2], expected.shape)
    mine = jax.vjp(ours, images, kernel)[1](cotangent)
    theirs = jax.vjp(reference, images, kernel)[1](cotangent)
    for a, b in zip(mine, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_conv2d_refuses_a_padding_it_cannot_mirror():
    with pytest.raises(ValueError, match="padding 'SAME' with stride 2"):
        conv2d(jnp.zeros((1, 8, 8, 1)), jnp.zeros((3, 3, 1, 1)), stride=2)


def test_summary_matches_the_keras_table_layout():
    unknown = filterviz.summary()
    assert "input_1 (InputLayer)         (None, None, None, 3)     0" in unknown
    assert "block5_conv3 (Conv2D)        (None, None, None, 512)   2359808" in unknown
    assert "Total params: 14,714,688" in unknown
    sized = filterviz.summary(224, 224)
    assert "block5_pool (MaxPooling2D)   (None, 7, 7, 512)         0" in sized
    assert "block1_conv1 (Conv2D)        (None, 224, 224, 64)      1792" in sized
    assert len([line for line in sized.splitlines() if "(Conv2D)" in line]) == 13
    assert "(None, 3, 4, 512)" in filterviz.summary(100, 150).splitlines()[-6]
    resnet = filterviz.summary(224, 224, model="resnet50")
    assert "conv5_block3_out (Activation)" in resnet and "(None, 7, 7, 2048)" in resnet
    assert "Total params: 23,587,712" in resnet  # Keras' ResNet50 without its top


def test_unknown_layer_lists_the_valid_names(vgg16):
    with pytest.raises(filterviz.UnknownLayerError) as caught:
        vgg16.layer("block6_conv1")
    assert isinstance(caught.value, KeyError)
    message = str(caught.value)
    assert "block6_conv1" in message and all(name in message for name in vgg16.layer_names)
    with pytest.raises(filterviz.UnknownLayerError, match="did you mean conv3_block4_out"):
        filterviz.network("resnet50").layer("conv3_block4_ot")


def test_flipped_kernels_change_nothing_but_speed(vgg16, random_params):
    prepared = with_flipped_kernels(random_params)
    image = 127 + 10 * jax.random.normal(jax.random.key(4), (1, 24, 24, 3))
    np.testing.assert_array_equal(
        vgg16.apply(prepared, image, ["block3_conv1"])["block3_conv1"],
        vgg16.apply(random_params, image, ["block3_conv1"])["block3_conv1"],
    )

    def mean(params, x):
        return jnp.mean(vgg16.channel_activation(params, x, "block3_conv1", 5))

    np.testing.assert_allclose(
        jax.grad(mean, 1)(prepared, image), jax.grad(mean, 1)(random_params, image), atol=1e-6
    )


def test_unknown_networks_are_a_setting_error():
    assert set(BUILTIN) >= {"vgg16", "vgg19", "resnet50"}
    with pytest.raises(
        filterviz.SettingError, match="unknown network 'alexnet'; built in: resnet50, vgg16, vgg19"
    ):
        filterviz.network("alexnet")


# ----------------------------------------------------------------------------------------------------
# VGG19 and ResNet50 against Keras, on weights Keras writes (its random initialisation, batch-norm
# statistics drawn at random too), in both layouts.


@pytest.fixture(scope="module")
def keras_networks(tmp_path_factory):
    """``{name: (keras model, keras3 file, legacy file)}`` for VGG19 and ResNet50 with random weights."""
    folder = tmp_path_factory.mktemp("keras-networks")
    return {name: keras_random_network(name, folder) for name in ("vgg19", "resnet50")}


@pytest.mark.parametrize("name", ["vgg19", "resnet50"])
def test_activations_at_every_named_layer_agree_with_keras(keras_networks, name):
    model, keras3, legacy = keras_networks[name]
    network = filterviz.network(name)
    names = [layer.name for layer in model.layers[1:]]
    assert list(network.layer_names) == names
    assert network.parameter_count() == model.count_params()
    errors = layer_errors_against_keras(network, model, (keras3, legacy))
    assert list(errors) == names
    for layer, error in errors.items():
        assert error <= 1e-5, (name, layer, error)


@pytest.mark.parametrize("name, other", [("vgg19", "vgg16"), ("resnet50", "vgg16"), ("vgg19", "resnet50")])
def test_weights_of_one_network_offered_as_another_name_both(keras_networks, name, other):
    _, keras3, legacy = keras_networks[name]
    for path in (keras3, legacy):
        with pytest.raises(filterviz.WeightsError, match=f"these are {name}'s weights, not {other}'s"):
            load_weights(path, network=other)


def test_vgg16_weights_offered_as_another_network_name_both(weights_path):
    with pytest.raises(filterviz.WeightsError, match="these are vgg16's weights, not resnet50's"):
        load_weights(weights_path, network="resnet50")


def test_each_network_knows_where_its_weights_come_from():
    for name, file_name, md5 in (
        ("vgg16", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "6d6bbae143d832006294945121d1f1fc"),
        ("vgg19", "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", "253f8cb515780f3b799900260a226db6"),
        (
            "resnet50",
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "4d473c1dd8becc155b73f8504c6f6626",
        ),
    ):
        source = filterviz.network(name).weights
        assert source.file_name == file_name and source.md5 == md5
        assert source.url.startswith("https://storage.googleapis.com/tensorflow/keras-applications/")
        assert source.url.endswith(file_name)


@pytest.mark.parametrize(
    "name, layer, expected", [("vgg16", "block5_conv3", 16), ("vgg19", "block5_pool", 32)]
)
def test_the_smallest_input_each_layer_needs(name, layer, expected):
    network = filterviz.network(name)
    assert network.minimum_size(layer) == expected
    assert min(network.output_size(layer, expected, expected)) == 1
    assert min(network.output_size(layer, expected - 1, expected - 1)) == 0


@pytest.mark.parametrize(
    "stride, padding, dilation, groups",
    [
        (1, "SAME", (1, 1), 1),
        ((2, 1), ((1, 2), (0, 1)), (1, 1), 1),
        (1, ((2, 2), (2, 2)), (2, 2), 4),
        (2, "VALID", (1, 1), 8),
    ],
)
def test_the_fast_convolution_has_jaxs_own_values_and_image_gradient(stride, padding, dilation, groups):
    # Strided, padded unevenly, dilated and grouped (depthwise at 8 groups): as PyTorch models use them.
    from jax import lax

    images = jax.random.normal(jax.random.key(0), (2, 11, 10, 8))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 8 // groups, 8))
    strides = (stride, stride) if isinstance(stride, int) else stride
    pads = {"SAME": ((1, 1), (1, 1)), "VALID": ((0, 0), (0, 0))}.get(padding, padding)

    def theirs(x):
        return lax.conv_general_dilated(
            x, kernel, strides, pads, rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )  # fmt: skip

    def ours(x):
        return conv2d(x, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups)

    np.testing.assert_allclose(ours(images), theirs(images), rtol=1e-5, atol=1e-5)
    weights = jax.random.normal(jax.random.key(2), theirs(images).shape)
    gradient = jax.grad(lambda x: jnp.sum(ours(x) * weights))(images)
    expected = jax.grad(lambda x: jnp.sum(theirs(x) * weights))(images)
    np.testing.assert_allclose(gradient, expected, rtol=1e-5, atol=1e-5)
