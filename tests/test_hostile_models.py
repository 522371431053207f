"""Models of one's own that filterviz cannot draw are refused at once, in one line: no hang, no raw
framework error. Hangs are tried in real processes with a timeout."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import filterviz
from filterviz.errors import printable

HANG_SECONDS = 120  # a refusal takes seconds; a hang would run until killed


@pytest.fixture(scope="module")
def odd_models(tmp_path_factory):
    """Keras models as users have them: an RGBA classifier, a layer that works at one input size only
    (behind a Dense and a Reshape), and a layer with an output at no square size."""
    import keras

    folder = tmp_path_factory.mktemp("odd_models")
    inputs = keras.Input((None, None, 4))
    rgba = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="conv")(inputs), name="rgba")
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(2, 3, padding="same", name="early")(inputs)
    x = keras.layers.Reshape((8, 8, 8))(keras.layers.Dense(512)(keras.layers.Flatten()(x)))
    fixed = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="late")(x), name="fixed")
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="first")(inputs)
    nowhere = keras.Model(inputs, keras.layers.Reshape((2, 8, 2), name="oblong")(x), name="nowhere")
    paths = {}
    for model in (rgba, fixed, nowhere):
        paths[model.name] = folder / f"{model.name}.keras"
        model.save(paths[model.name])
    return paths


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "filterviz", *arguments]
    if arguments[0] == "filters":
        command += ["--filters", "0-1"]
    return subprocess.run(command, capture_output=True, text=True, timeout=HANG_SECONDS, check=False)


def one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("filterviz: error:") and all(word in lines[0] for word in words), lines


@pytest.mark.slow
def test_models_that_cannot_be_drawn_are_refused_at_once_not_searched_forever(odd_models, tmp_path):
    out = str(tmp_path / "grid.png")
    rgba = run_cli("filters", "conv", "--model", str(odd_models["rgba"]), "--out", out)
    one_line_error(rgba, "4 input channels")
    fixed = run_cli("filters", "late", "--model", str(odd_models["fixed"]), "--steps", "1", "--out", out)
    one_line_error(fixed, "late", "128x128")
    drawn = run_cli(
        "filters", "late", "--model", str(odd_models["fixed"]), "--size", "16", "--steps", "1",
        "--out", out,
    )  # fmt: skip
    assert drawn.returncode == 0, drawn.stderr  # at the one size it has, the layer is drawn
    nowhere = run_cli("filters", "oblong", "--model", str(odd_models["nowhere"]), "--out", out)
    one_line_error(nowhere, "oblong", "no output for any square input")
    listed = run_cli("layers", "--model", str(odd_models["nowhere"]))
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert "cannot be drawn" in rows["oblong"] and "cannot be drawn" not in rows["first"]


def test_the_api_refuses_the_same_models_with_typed_errors(odd_models):
    with pytest.raises(filterviz.SettingError, match="4 input channels"):
        filterviz.from_keras(odd_models["rgba"])
    network, params = filterviz.from_keras(odd_models["nowhere"])
    with pytest.raises(filterviz.SettingError, match=r"oblong .* no output for any square input"):
        filterviz.render(params, filterviz.channel("oblong", [0]), network=network, steps=1)
    assert network.minimum_size("first") == 1


def test_flax_modules_and_variables_that_do_not_fit_are_refused_in_one_line():
    import flax.linen as nn

    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Conv(2, (3, 3), name="conv")(x)

    rgba_variables = Tiny().init(jax.random.key(0), jnp.zeros((1, 8, 8, 4)))
    for channels in (4, 0, -1, 2.5, True, "3"):
        with pytest.raises(filterviz.SettingError, match="input channels"):
            filterviz.from_flax(Tiny(), rgba_variables, channels=channels)
    with pytest.raises(filterviz.SettingError, match="cannot run on images of shape") as raised:
        filterviz.from_flax(Tiny(), rgba_variables)  # RGB pictures into a 4-channel kernel
    assert "\n" not in str(raised.value)
    for variables in (None, {}, [1, 2], "params"):
        with pytest.raises(filterviz.SettingError, match="needs its variables"):
            filterviz.from_flax(Tiny(), variables)
    other = {"params": {"elsewhere": {"kernel": jnp.zeros((3, 3, 3, 2))}}}
    with pytest.raises(filterviz.SettingError, match="cannot run on images"):
        filterviz.from_flax(Tiny(), other)


def test_a_models_own_error_at_the_size_it_is_fed_is_one_typed_line():
    import flax.linen as nn

    class Multiple(nn.Module):  # a model that asserts on its input size, as many do
        @nn.compact
        def __call__(self, x):
            assert x.shape[1] % 16 == 0, "the side must be a multiple of 16"
            return nn.Conv(2, (3, 3), name="conv")(x)

    variables = Multiple().init(jax.random.key(0), jnp.ones((1, 16, 16, 3)))
    network, variables = filterviz.from_flax(Multiple(), variables)
    with pytest.raises(filterviz.SettingError, match=r"24x24 .*AssertionError: the side must be") as raised:
        filterviz.render(variables, filterviz.channel("conv", 0), network=network, size=24, steps=1)
    assert "\n" not in str(raised.value)
    # The Lucid transforms feed the model another size than the picture's: its error names that shape.
    with pytest.raises(filterviz.SettingError, match=r"fails on images of shape \[1, \d+, \d+, 3\]"):
        filterviz.render(variables, filterviz.channel("conv", 0), network=network, size=32, steps=1)


def test_a_channels_first_keras_model_is_named_as_such():
    import keras

    inputs = keras.Input((3, None, None))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, data_format="channels_first")(inputs))
    with pytest.raises(filterviz.SettingError, match="channels first"):
        filterviz.from_keras(model)


def test_names_with_control_characters_are_printed_escaped():
    assert printable("a\nb\x1b[31mc\td") == "a\\nb\\x1b[31mc\\td"
    assert printable("photo 1.png") == "photo 1.png"


def _scaled_params(params, factor):
    # Finite params whose activations overflow float32: the objective comes out NaN.
    changed = {group: dict(arrays) for group, arrays in params.items()}
    changed["block1_conv1"]["kernel"] = params["block1_conv1"]["kernel"] * factor
    return changed


def _nan_params(params):
    changed = {group: dict(arrays) for group, arrays in params.items()}
    changed["block1_conv1"]["kernel"] = params["block1_conv1"]["kernel"] * jnp.nan
    return changed


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: filterviz.render(None, filterviz.channel("block1_conv1", 0)), "params must be"),
        (lambda p: filterviz.render([p], filterviz.channel("block1_conv1", 0)), "params must be"),
        (lambda p: filterviz.render({}, filterviz.channel("block1_conv1", 0)), "is missing"),
        (lambda p: filterviz.render(_nan_params(p), filterviz.channel("block1_conv1", 0)), "NaN"),
        (lambda p: filterviz.render(p, filterviz.channel("block1_conv1", 0), network="vgg19"), "vgg19"),
        (lambda p: filterviz.channel("block1_conv1", [[0, 1], [2]]), "1-D sequence"),
        (lambda p: (1e300 * filterviz.channel("block1_conv1", 0)) * 1e300, "finite and at most"),
        (lambda p: 1e20 * (1e20 * filterviz.channel("block1_conv1", 0)), "finite and at most"),
        (lambda p: filterviz.render(p, filterviz.channel("block1_conv1", 0), steps=2**40), "at most"),
        (
            lambda p: filterviz.render(
                p, filterviz.channel("block1_conv1", 0), steps=2**30, frame_every=1, size=64
            ),
            "frames",
        ),
        (lambda p: filterviz.load_image(None), "not a path"),
        (lambda p: filterviz.channel("block1_conv1", 2**32), "fit in 32 bits"),  # would wrap to 0
        (lambda p: filterviz.channel("block1_conv1", []), "empty"),
        (lambda p: filterviz.direction("block1_conv1", np.zeros(64)), "all zeros"),
        (
            lambda p: filterviz.render(
                p, filterviz.channel("block1_conv1", 0), method="notebook", octaves=2, steps=1, size=16
            ),
            r"Octaves\(stages, scale\)",
        ),
        (
            lambda p: filterviz.render(
                _scaled_params(p, 1e38),
                filterviz.channel("block1_conv1", 0),
                method="notebook",
                steps=1,
                size=16,
            ),
            "came out nan",
        ),
        (
            lambda p: filterviz.render(
                p, filterviz.objective(lambda a: a["block1_conv1"][0], "block1_conv1"), steps=1, size=16
            ),
            "must return a scalar",
        ),
    ],
    ids=[
        "none",
        "list",
        "empty",
        "nan",
        "vgg16-as-vgg19",
        "ragged",
        "overflow",
        "overflow-again",
        "steps",
        "frames",
        "load-none",
        "index-past-int32",
        "no-index",
        "zero-direction",
        "octaves-not-octaves",
        "params-overflow",
        "not-scalar",
    ],
)
def test_bad_api_arguments_are_typed_errors_naming_them(random_params, call, message):
    with pytest.raises(filterviz.FilterVizError, match=message):
        call(random_params)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"image_size": 100_000}, "largest that fits"),
        ({"image_size": 20_000}, "largest that fits"),
        ({"image_batch_size": 10**9}, "image_batch_size .* the largest that fits"),
        ({"count": 10**9}, "count .* the largest that fits"),
        ({"workers": -1}, "workers"),
        ({"workers": 0}, "workers"),
    ],
)
def test_examples_refuse_what_exhausts_memory_in_one_line(random_params, tmp_path, settings, message):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(filterviz.SettingError, match=message):
        filterviz.examples(random_params, tmp_path, ["block1_conv1"], **settings)
