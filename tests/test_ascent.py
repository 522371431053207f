"""The ascent: it raises the objective, compiles once per configuration, chunks correctly, checks input."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest

import filterviz
from filterviz.core.checks import default_batch_size
from filterviz.core.engine import Ascent, render_batch
from filterviz.core.methods import notebook_method


def mean_activation(params, image, layer, filter_index) -> float:
    return float(filterviz.activations(params, image, layer)[0, ..., filter_index].mean())


@pytest.mark.parametrize(
    "layer, filter_index", [("block1_conv2", 3), ("block3_pool", 10), ("block5_conv1", 0)]
)
def test_ascent_raises_the_filter_mean_activation(params, layer, filter_index):
    start = filterviz.random_image(jax.random.key(0), 64, 64)
    before = mean_activation(params, start, layer, filter_index)
    after_few = filterviz.ascend(params, layer, [filter_index], start, steps=3)[0]
    after_more = filterviz.ascend(params, layer, [filter_index], start, steps=10)[0]
    assert mean_activation(params, after_few, layer, filter_index) > before
    assert mean_activation(params, after_more, layer, filter_index) > mean_activation(
        params, after_few, layer, filter_index
    )


def test_activations_are_float32_unless_asked_and_check_the_precision(vgg16, random_params):
    images = np.asarray(filterviz.random_image(jax.random.key(2), 20, 20))[None]
    with jax.default_matmul_precision("float32"):
        expected = vgg16.apply(random_params, images, ["block2_conv1"])["block2_conv1"]
    ours = filterviz.activations(random_params, images, "block2_conv1")
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6)
    low = filterviz.activations(random_params, images, "block2_conv1", precision="bfloat16")
    assert low.dtype == np.float32 and not np.array_equal(np.asarray(low), np.asarray(ours))
    with pytest.raises(filterviz.SettingError, match="precision"):
        filterviz.activations(random_params, images, "block2_conv1", precision="fp8")


def test_one_compilation_per_configuration_whatever_the_filters(random_params):
    start = filterviz.random_image(jax.random.key(0), 24, 24)
    layer = "block2_conv1"
    filterviz.ascend(random_params, layer, [0, 1, 2, 3, 4], start, steps=2, batch_size=2)
    compiled = render_batch._cache_size()
    # Other filters, another padded last chunk, another step size, another start: no new program.
    filterviz.ascend(random_params, layer, [9, 8, 7], start + 1, steps=2, step_size=0.5, batch_size=2)
    filterviz.ascend(random_params, layer, list(range(100, 107)), start, steps=2, batch_size=2)
    assert render_batch._cache_size() == compiled
    filterviz.ascend(random_params, layer, [0, 1], start, steps=3, batch_size=2)  # steps are static
    assert render_batch._cache_size() == compiled + 1


def test_chunked_equals_unchunked_and_keeps_filter_order(random_params):
    start = filterviz.random_image(jax.random.key(1), 20, 20)
    filters = [5, 1, 30, 2, 17]
    whole = filterviz.ascend(random_params, "block1_conv2", filters, start, steps=3, batch_size=5)
    chunked = filterviz.ascend(random_params, "block1_conv2", filters, start, steps=3, batch_size=2)
    assert whole.shape == (5, 20, 20, 3)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-4)
    single = filterviz.ascend(random_params, "block1_conv2", [30], start, steps=3)
    np.testing.assert_allclose(single[0], whole[2], rtol=0, atol=1e-4)


def test_per_filter_start_images_and_zero_steps(random_params):
    starts = np.stack([np.asarray(filterviz.random_image(jax.random.key(i), 16, 16)) for i in range(3)])
    kept = starts.copy()
    unchanged = filterviz.ascend(random_params, "block1_conv1", [0, 1, 2], starts, steps=0)
    np.testing.assert_array_equal(unchanged, starts)
    moved = filterviz.ascend(random_params, "block1_conv1", [0, 1, 2], starts, steps=2)
    np.testing.assert_array_equal(starts, kept)  # the caller's array is never modified
    assert not np.allclose(moved, starts)


def test_each_step_moves_the_image_by_step_size_in_rms(vgg16, random_params):
    start = filterviz.random_image(jax.random.key(2), 16, 16)
    moved = np.asarray(filterviz.ascend(random_params, "block1_conv2", [4], start, steps=1, step_size=2.5)[0])

    def filter_mean(image):
        return vgg16.apply(random_params, image[None], ["block1_conv2"])["block1_conv2"][..., 4].mean()

    gradient = jax.grad(filter_mean)(start)
    gradient_rms = float(np.sqrt(np.mean(np.square(gradient))))
    rms = np.sqrt(np.mean(np.square(moved - np.asarray(start))))
    # The notebook's update: the normalised gradient has RMS 1, up to the 1e-5 added to its RMS.
    np.testing.assert_allclose(rms, 2.5 * gradient_rms / (gradient_rms + 1e-5), rtol=1e-4)


def test_layer_image_is_the_deprocessed_ascent(random_params):
    start = filterviz.random_image(jax.random.key(3), 16, 16)
    picture = filterviz.layer_image(random_params, "block1_conv1", 7, start, steps=2)
    assert picture.dtype == np.uint8 and picture.shape == (16, 16, 3)
    expected = filterviz.as_image(filterviz.ascend(random_params, "block1_conv1", [7], start, steps=2)[0])
    np.testing.assert_array_equal(picture, expected)


def test_bad_input_raises_typed_errors(random_params):
    start = filterviz.random_image(jax.random.key(0), 16, 16)
    with pytest.raises(filterviz.UnknownLayerError, match="valid layers: block1_conv1"):
        filterviz.ascend(random_params, "conv1", [0], start)
    with pytest.raises(filterviz.FilterIndexError, match=r"valid: 0-63") as caught:
        filterviz.ascend(random_params, "block1_conv1", [0, 64], start)
    assert isinstance(caught.value, IndexError)
    with pytest.raises(filterviz.FilterIndexError, match="filter -1"):
        filterviz.ascend(random_params, "block1_conv1", -1, start)
    with pytest.raises(filterviz.ImageError, match=r"\[H, W, 3\]"):
        filterviz.ascend(random_params, "block1_conv1", [0], np.zeros((16, 16)))
    with pytest.raises(filterviz.ImageError):
        filterviz.ascend(random_params, "block1_conv1", [0, 1], np.zeros((3, 16, 16, 3)))


class _FakeAccelerator:
    platform = "gpu"

    def __init__(self, memory: int):
        self.memory = memory

    def memory_stats(self):
        return {"bytes_limit": self.memory}


def test_default_batch_size_bounds_memory(vgg16):
    assert default_batch_size(vgg16, "block5_conv3", 128, 128) == 1  # on CPU, one filter per call is fastest
    big = _FakeAccelerator(80 << 30)
    assert default_batch_size(vgg16, "block5_conv3", 128, 128, big) == 256
    per_filter = vgg16.activation_elements("block5_conv3", 1024, 1024) * 12
    chunk = default_batch_size(vgg16, "block5_conv3", 1024, 1024, big)
    assert 1 <= chunk < 256 and chunk * per_filter <= 0.4 * (80 << 30)
    assert default_batch_size(vgg16, "block5_conv3", 8192, 8192, _FakeAccelerator(1 << 30)) == 1
    assert default_batch_size(vgg16, "block1_conv1", 512, 512, big) >= chunk
    resnet = filterviz.network("resnet50")  # a deeper network's layer holds more per filter
    assert default_batch_size(resnet, "conv5_block3_out", 1024, 1024, big) < chunk


@pytest.mark.parametrize("name, layer", [("vgg16", "block2_conv2"), ("resnet50", "conv2_block1_out")])
def test_every_convolution_in_the_compiled_ascent_uses_an_hwio_kernel(name, layer):
    # XLA:CPU runs convolutions whose kernel swaps in/out axes (dim_labels ..._01oi->...) with a slow
    # generic loop inside while loops; conv2d's custom gradient exists to keep them all HWIO, in VGG's
    # 3x3 convolutions and in ResNet50's 1x1, 3x3 and strided 7x7 ones alike.
    network = filterviz.network(name)
    start = np.zeros((32, 32, 3), np.float32)
    objective = filterviz.channel(layer, np.zeros(1, np.int32))
    keys = jax.random.split(jax.random.key(0), 1)
    # Only the compiled program is read: the parameters' shapes are enough (no initialising pass).
    params = {
        group: {key: jax.ShapeDtypeStruct(shape, np.float32) for key, shape in names.items()}
        for group, names in network.parameter_shapes.items()
    }
    ascent = Ascent(network, notebook_method(2), (32, 32), measure=False)
    lowered = render_batch.lower(ascent, params, objective, start, keys)
    hlo = lowered.compile().as_text()
    labels = re.findall(r"dim_labels=(\w+)_(\w+)->", hlo)
    assert labels, "no convolutions found in the compiled ascent"
    assert {kernel for _, kernel in labels} == {"01io"}


def test_random_image_and_as_image():
    first = filterviz.random_image(jax.random.key(5), 64, 48, mean=100.0, std=5.0)
    assert first.shape == (64, 48, 3) and first.dtype == np.float32
    assert abs(float(first.mean()) - 100.0) < 0.5 and abs(float(first.std()) - 5.0) < 0.2
    np.testing.assert_array_equal(
        first, filterviz.random_image(jax.random.key(5), 64, 48, mean=100.0, std=5.0)
    )
    batch = np.stack([np.asarray(first), 3 * np.asarray(first) + 50])
    kept = batch.copy()
    pictures = filterviz.as_image(batch)
    np.testing.assert_array_equal(batch, kept)
    assert pictures.dtype == np.uint8 and pictures.shape == (2, 64, 48, 3)
    # Per image: a scaled and shifted copy deprocesses to the same picture.
    assert np.abs(pictures[0].astype(int) - pictures[1].astype(int)).max() <= 1
    np.testing.assert_array_equal(pictures[0], filterviz.as_image(batch[0]))
    assert abs(pictures[0].mean() - 127.5) < 1.5
