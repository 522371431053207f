"""Objectives, input conventions, parameterizations and transforms: each measured on its own."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import filterviz
from filterviz.core import parameterizations as param
from filterviz.core import transforms
from filterviz.core.engine import objective_value
from filterviz.core.methods import get_method
from filterviz.core.network import preprocess
from filterviz.core.objectives import channel, deepdream, direction, diversity, neuron
from filterviz.draw.rendering import render

SIZE = 32


# ----------------------------------------------------------------------------------------------------
# Objectives


# ----------------------------------------------------------------------------------------------------
# Objectives


def test_objectives_compose_as_weighted_sums():
    key = jax.random.key(0)
    acts = {
        "block1_conv1": jax.random.uniform(key, (2, 4, 4, 64)),
        "block2_conv1": jax.random.uniform(jax.random.key(1), (2, 2, 2, 128)),
    }
    a, b = channel("block1_conv1", 3), deepdream("block2_conv1")
    assert float((a + 2.0 * b)(acts)) == pytest.approx(float(a(acts)) + 2 * float(b(acts)), rel=1e-6)
    assert float((a - b)(acts)) == pytest.approx(float(a(acts)) - float(b(acts)), rel=1e-6)
    assert float((-a)(acts)) == pytest.approx(-float(a(acts)))
    assert (a + b).layers == ("block1_conv1", "block2_conv1")
    # Each term against its definition.
    x1 = np.asarray(acts["block1_conv1"])
    assert float(a(acts)) == pytest.approx(x1[..., 3].mean(), rel=1e-6)
    assert float(b(acts)) == pytest.approx(np.square(acts["block2_conv1"]).mean(), rel=1e-6)
    assert float(neuron("block1_conv1", 3)(acts)) == pytest.approx(x1[:, 2, 2, 3].mean(), rel=1e-6)
    assert float(neuron("block1_conv1", 3, 0, 1)(acts)) == pytest.approx(x1[:, 0, 1, 3].mean(), rel=1e-6)
    one_hot = np.eye(64)[3]
    assert float(direction("block1_conv1", one_hot)(acts)) == pytest.approx(float(a(acts)), rel=1e-6)


def test_diversity_is_minus_the_mean_gram_similarity():
    same = jnp.ones((3, 4, 4, 8))
    # Identical images: every pair has similarity 1; 3 * 2 ordered pairs / 3 images.
    assert float(diversity("block1_conv1")({"block1_conv1": same})) == pytest.approx(-2.0, rel=1e-5)
    assert float(diversity("block1_conv1")({"block1_conv1": same[:1]})) == 0.0
    # Images whose features live in disjoint channels have orthogonal Gram matrices: diversity 0.
    apart = jnp.zeros((2, 4, 4, 8)).at[0, ..., :4].set(1).at[1, ..., 4:].set(1)
    assert float(diversity("block1_conv1")({"block1_conv1": apart})) == pytest.approx(0.0, abs=1e-6)


def test_objective_batches_are_pytrees_that_vmap():
    objective = channel("block1_conv1", [1, 2, 3]) + 0.5 * direction("block1_conv1", np.ones(64))
    assert objective.batch_size() == 3
    leaves, structure = jax.tree.flatten(objective)
    assert len(leaves) == 2  # the filter indices and the direction; weights and layers are structure
    rebuilt = jax.tree.unflatten(structure, leaves)
    assert [term.kind for term in rebuilt.terms] == ["channel", "direction"]
    assert [term.weight for term in rebuilt.terms] == [1.0, 0.5]
    np.testing.assert_array_equal(rebuilt.terms[0].arguments[0], [1, 2, 3])
    acts = {"block1_conv1": jax.random.uniform(jax.random.key(0), (1, 4, 4, 64))}
    batched = jax.vmap(lambda o: o(acts), in_axes=(objective.batch_axes(),))(objective)
    single = [
        float((channel("block1_conv1", i) + 0.5 * direction("block1_conv1", np.ones(64)))(acts))
        for i in (1, 2, 3)
    ]
    np.testing.assert_allclose(np.asarray(batched), single, rtol=1e-6)
    with pytest.raises(filterviz.SettingError, match="different sizes"):
        (channel("block1_conv1", [1, 2]) + channel("block1_conv1", [1, 2, 3])).batch_size()


def test_objective_arguments_are_checked_against_the_network(vgg16, random_params):
    # Objectives name layers and hold no network: the network they run on checks them, before any work.
    with pytest.raises(filterviz.UnknownLayerError, match="block1_conv1"):
        channel("block9_conv1", 0).check(vgg16)
    with pytest.raises(filterviz.FilterIndexError, match="0-63"):
        channel("block1_conv1", 64).check(vgg16)
    with pytest.raises(filterviz.SettingError, match="64 values"):
        direction("block1_conv1", np.ones(3)).check(vgg16)
    with pytest.raises(filterviz.UnknownLayerError, match="conv1_conv"):
        filterviz.render(random_params, channel("conv1_conv", 0), size=16, steps=1)
    channel("conv1_conv", 63).check(filterviz.network("resnet50"))  # ResNet50's first layer


@pytest.mark.parametrize("method", ["notebook", "lucid"])
def test_the_one_channel_fast_path_equals_the_full_forward_pass(vgg16, params, method):
    images = jnp.stack([filterviz.random_image(jax.random.key(i), SIZE, SIZE) for i in range(2)])
    objective = channel("block3_conv2", 17)
    method = get_method(method)
    inputs = preprocess(images, "caffe" if method.name == "lucid" else "raw")
    full = objective(vgg16.apply(params, inputs, objective.layers))
    prepared = vgg16.prepared(params, jnp.float32)

    def fast(pixels):
        return objective_value(vgg16, prepared, objective, method, pixels, None)

    assert float(fast(images)) == pytest.approx(float(full), rel=1e-5)
    # The target layer's one filter is computed alone, as matrix-vector products: only the five
    # convolutions below block3_conv2 remain convolutions.
    assert str(jax.make_jaxpr(fast)(images)).count("conv_general_dilated") == 5


def test_a_multi_layer_objective_runs_the_network_once(vgg16, params):
    objective = channel("block1_conv2", 0) + deepdream("block2_conv1") + neuron("block2_conv2", 3)
    prepared = vgg16.prepared(params, jnp.float32)
    jaxpr = jax.make_jaxpr(
        lambda image: objective_value(vgg16, prepared, objective, get_method("notebook"), image, None)
    )(jnp.zeros((1, SIZE, SIZE, 3)))
    convolutions = str(jaxpr).count("conv_general_dilated")
    assert convolutions == 4  # block1_conv1, block1_conv2, block2_conv1, block2_conv2: each once


@pytest.mark.parametrize(
    "objective",
    [
        channel("block3_conv1", 5),
        neuron("block3_conv1", 5),
        direction("block3_conv1", np.linspace(-1, 1, 256)),
        deepdream("block3_conv1"),
        channel("block2_conv2", 7) + 10.0 * diversity("block2_conv1"),
    ],
    ids=["channel", "neuron", "direction", "deepdream", "channel+diversity"],
)
@pytest.mark.parametrize("method", ["notebook", "lucid"])
def test_every_objective_rises_under_ascent(params, objective, method):
    count = 3 if any(term.kind == "diversity" for term in objective.terms) else 1
    # Redirected ReLU gradients (Lucid's, on in its preset): a unit that is off on the start image, as the
    # centre neuron is here, otherwise has no gradient at all and cannot rise under any method.
    settings = {"images_per_filter": count, "redirect_relu": True}
    before = render(params, objective, method=method, size=SIZE, steps=0, **settings)
    after = render(params, objective, method=method, size=SIZE, steps=16, **settings)
    assert after.activations[0] > before.activations[0] + 1e-3 * abs(before.activations[0])


@pytest.mark.slow
def test_diversity_term_pulls_the_images_apart(params):
    base = channel("block2_conv2", 7)
    plain = render(params, base, size=SIZE, steps=24, images_per_filter=3)
    diverse = render(
        params, base + 100.0 * diversity("block2_conv1"), size=SIZE, steps=24, images_per_filter=3
    )
    score = diversity("block2_conv1")

    def spread(result):
        pixels = jnp.asarray(result.pixels[0])
        inputs = preprocess(pixels, "caffe")
        return float(score(filterviz.network("vgg16").apply(params, inputs, ["block2_conv1"])))

    assert spread(diverse) > spread(plain)


# ----------------------------------------------------------------------------------------------------
# Parameterizations and preprocessing


@pytest.mark.parametrize("mode", ["caffe", "torch", "tf"])
def test_input_conventions_match_keras(mode):
    from keras.applications.imagenet_utils import preprocess_input

    pixels = np.random.default_rng(0).uniform(0, 255, (2, 5, 6, 3)).astype(np.float32)
    expected = preprocess_input(pixels.copy(), mode=mode)
    np.testing.assert_allclose(np.asarray(preprocess(jnp.asarray(pixels), mode)), expected, atol=1e-4)


def test_raw_input_is_the_pixels_and_unknown_conventions_are_refused():
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 5, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(preprocess(jnp.asarray(pixels), "raw")), pixels)
    with pytest.raises(filterviz.SettingError, match="raw, caffe"):
        preprocess(jnp.asarray(pixels), "bgr")


def lucid_fourier_reference(
    spectrum: np.ndarray, height: int, width: int, sd_decay: float = 1.0
) -> np.ndarray:
    """Lucid's fft_image + to_valid_rgb written out in NumPy from its description, one image."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[: width // 2 + 1 + (width % 2)][None, :]
    frequencies = np.sqrt(fy * fy + fx * fx)[:, : width // 2 + 1]
    scale = 1.0 / np.maximum(frequencies, 1.0 / max(width, height)) ** sd_decay * np.sqrt(width * height)
    complex_spectrum = (spectrum[..., 0] + 1j * spectrum[..., 1]) * scale
    image = np.fft.irfft2(complex_spectrum, s=(height, width)) / 4.0  # [3, H, W]
    image = np.moveaxis(image, 0, -1)
    matrix = param.COLOR_CORRELATION_SQRT / np.max(np.linalg.norm(param.COLOR_CORRELATION_SQRT, axis=0))
    return 255.0 / (1.0 + np.exp(-(image @ matrix.T)))


@pytest.mark.parametrize("height, width", [(32, 32), (24, 31)])
def test_fourier_image_follows_lucid(height, width):
    fourier = param.Fourier()
    raw = fourier.init(jax.random.key(0), 2, height, width)
    assert raw.shape == (2, 3, height, width // 2 + 1, 2)
    assert float(jnp.std(raw)) == pytest.approx(0.01, rel=0.1)
    pixels = np.asarray(fourier.to_pixels(raw, height, width))
    assert pixels.shape == (2, height, width, 3) and pixels.min() > 0 and pixels.max() < 255
    expected = lucid_fourier_reference(np.asarray(raw[1], np.float64) * 1.0, height, width)
    np.testing.assert_allclose(pixels[1], expected, atol=1e-3)
    # From sd 0.01 the start is a near-uniform grey, as in Lucid.
    assert abs(pixels.mean() - 127.5) < 5


def test_maco_keeps_the_magnitude_and_moves_only_the_phase():
    maco = param.Maco(spectrum=None)  # the 1/f law; the spectrum file's is tested in test_view_and_maco
    height, width = 32, 32
    raw = maco.init(jax.random.key(0), 1, height, width)
    template = maco.magnitude(height, width)
    # Phase-only optimisation: whatever the raw variables, the image's spectrum has the template's
    # magnitude (up to the one scale that standardisation applies), away from the mean.
    for phase in (raw, raw + 3.0 * jax.random.normal(jax.random.key(1), raw.shape)):
        standardized = (phase - phase.mean()) / (phase.std() + 1e-4)
        spectrum = template * jnp.exp(1j * standardized)
        spatial = np.fft.irfft2(np.asarray(spectrum), s=(height, width))[0, 0]
        ratio = np.abs(np.fft.rfft2(spatial))[1:, 1:-1] / template[1:, 1:-1]
        assert ratio.std() / ratio.mean() < 1e-3
    pixels = np.asarray(maco.to_pixels(raw, height, width))
    # MaCo's values range: ImageNet's mean pixel +- 2.5 of its standard deviations, a little past 0-255.
    mean, std = np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255
    assert pixels.shape == (1, height, width, 3)
    assert (pixels > mean - 2.5 * std).all() and (pixels < mean + 2.5 * std).all()
    assert pixels.min() < 0 or pixels.max() > 255 or np.ptp(pixels) > 100


# ----------------------------------------------------------------------------------------------------
# Transforms


def _image(height=21, width=21):
    return jax.random.uniform(jax.random.key(3), (height, width, 3), minval=0, maxval=255)


@pytest.mark.parametrize(
    "transform",
    [
        transforms.Jitter(4),
        transforms.RandomScale(transforms.LUCID_SCALES),
        transforms.RandomRotate(transforms.LUCID_ANGLES),
        transforms.RandomCrop(),
        transforms.Noise(3.0),
        transforms.compose(transforms.STANDARD),
    ],
    ids=["jitter", "scale", "rotate", "crop", "noise", "standard"],
)
def test_each_transform_is_deterministic_per_key(transform):
    image = _image(40, 40)
    first = transform(jax.random.key(5), image)
    again = jax.jit(transform)(jax.random.key(5), image)
    np.testing.assert_allclose(np.asarray(first), np.asarray(again), atol=1e-3)
    outputs = {np.asarray(transform(jax.random.key(k), image)).tobytes() for k in range(8)}
    assert len(outputs) > 1  # other keys, other draws


def test_transform_shapes_and_geometry():
    image = _image()
    assert transforms.Pad(12)(None, image).shape == (45, 45, 3)
    assert float(transforms.Pad(12)(None, image)[0, 0, 0]) == 127.5
    assert transforms.compose(transforms.STANDARD)(jax.random.key(0), jnp.zeros((128, 128, 3))).shape == (
        140,
        140,
        3,
    )
    # Jitter is a crop at an offset within 0..d.
    jittered = np.asarray(transforms.Jitter(4)(jax.random.key(1), image))
    matches = [
        (dy, dx)
        for dy in range(5)
        for dx in range(5)
        if np.array_equal(jittered, np.asarray(image)[dy : dy + 17, dx : dx + 17])
    ]
    assert len(matches) == 1
    # A 90-degree rotation of a square image about its centre is rot90; scale 1 and angle 0 change nothing.
    rotated = transforms.RandomRotate((90.0,))(jax.random.key(0), image)
    np.testing.assert_allclose(np.asarray(rotated), np.rot90(np.asarray(image), k=1, axes=(0, 1)), atol=1e-3)
    np.testing.assert_allclose(
        np.asarray(transforms.RandomScale((1.0,))(jax.random.key(0), image)), image, atol=1e-4
    )
    # Zooming in by 2 keeps the centre pixel and doubles distances from it.
    zoomed = np.asarray(transforms.RandomScale((2.0,))(jax.random.key(0), image))
    np.testing.assert_allclose(zoomed[10, 10], np.asarray(image)[10, 10], atol=1e-4)
    np.testing.assert_allclose(zoomed[12, 10], np.asarray(image)[11, 10], atol=1e-4)
    with pytest.raises(filterviz.SettingError, match="leaves nothing"):
        transforms.Jitter(30)(jax.random.key(0), image)


def test_a_chain_of_geometric_transforms_is_sampled_once_and_agrees_with_one_at_a_time():
    # On a linear ramp bilinear sampling is exact, so sampling once after the whole chain and sampling
    # after each transform must agree wherever no fill was read.
    rows, columns = np.meshgrid(np.arange(48.0), np.arange(48.0), indexing="ij")
    ramp = jnp.asarray(np.stack([rows * 2 + 10, columns * 3 + 5, rows + columns + 20], -1), jnp.float32)
    key = jax.random.key(7)
    fused = transforms.compose(transforms.STANDARD)(key, ramp)
    image = ramp
    for transform, subkey in zip(
        transforms.STANDARD, jax.random.split(key, len(transforms.STANDARD)), strict=True
    ):
        image = transform(subkey, image)
    assert fused.shape == image.shape == (60, 60, 3)
    interior = np.s_[20:40, 20:40]
    np.testing.assert_allclose(np.asarray(fused)[interior], np.asarray(image)[interior], atol=1e-3)
    # Integer shifts stay exact through the one sampling: a pad then a jitter is a crop of the padded image.
    shifted = transforms.compose([transforms.Pad(3), transforms.Jitter(4)])(key, ramp)
    padded = np.pad(np.asarray(ramp), ((3, 3), (3, 3), (0, 0)), constant_values=transforms.MID_GREY)
    dy, dx = np.asarray(jax.random.randint(jax.random.split(key, 2)[1], (2,), 0, 5))
    np.testing.assert_array_equal(np.asarray(shifted), padded[dy : dy + 50, dx : dx + 50])


def test_resampling_reads_fill_outside_the_image_and_keeps_gradients_inside():
    image = _image(8, 8)
    far = (4, 4, jnp.array([[1.0, 0, 100], [0, 1, -100], [0, 0, 1]]))  # every point far outside
    np.testing.assert_array_equal(np.asarray(transforms.resample(image, far, fill=7.0)), 7.0)
    half = (1, 1, jnp.array([[1.0, 0, -0.5], [0, 1, 0], [0, 0, 1]]))  # half a pixel above row 0
    np.testing.assert_allclose(transforms.resample(image, half, 0.0)[0, 0], image[0, 0] / 2, rtol=1e-6)
    inside = (2, 2, jnp.array([[1.0, 0, 2.25], [0, 1, 3.5], [0, 0, 1]]))
    gradient = jax.grad(lambda x: jnp.sum(transforms.resample(x, inside)))(image)
    assert float(gradient.sum()) == pytest.approx(4 * 3)  # four samples, weights summing to 1, 3 channels
    assert np.count_nonzero(np.asarray(gradient)[..., 0]) == 3 * 3  # rows 2.25, 3.25 and columns 3.5, 4.5


# ----------------------------------------------------------------------------------------------------
# Optimizers
