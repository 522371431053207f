"""Your own network: Keras 3 models (a file or an object), Flax linen and NNX modules, end to end from the
API and the command line, with activations equal to the framework's own; objectives of your own."""

from __future__ import annotations

import json
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import filterviz
from filterviz.cli import main
from filterviz.core.engine import filter_keys
from filterviz.core.hits import receptive_field
from filterviz.io.photos import load_fitted, load_image
from parity import relative_error
from support import page_data

SIZE = 32


def images(count: int = 2, size: int = SIZE) -> np.ndarray:
    return np.asarray([filterviz.random_image(jax.random.key(seed), size, size) for seed in range(count)])


def rises(params, network, layer, method="notebook", filters=range(4), **settings) -> bool:
    """Every one of ``filters`` of ``layer`` ends higher than it starts under ``method``."""
    objective = filterviz.channel(layer, filters)
    common = {"network": network, "method": method, "size": SIZE, "seed": 1, "redirect_relu": True}
    before = filterviz.render(params, objective, steps=0, **common, **settings).activations
    after = filterviz.render(params, objective, steps=6, **common, **settings).activations
    return bool(np.all(after > before))


# ----------------------------------------------------------------------------------------------------
# Keras


@pytest.fixture(scope="module")
def keras_cnn(tmp_path_factory):
    """A small classifier as a user writes one, its random weights, saved as a .keras file."""
    import keras

    keras.utils.set_random_seed(0)  # the same weights every run: what the tests assert holds for these
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="edges")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="shapes")(x)
    x = keras.layers.BatchNormalization(name="shapes_bn")(x)
    x = keras.layers.Activation("relu", name="shapes_relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, outputs, name="my_cnn")
    rng = np.random.default_rng(0)
    bn = model.get_layer("shapes_bn")
    bn.set_weights(
        [rng.uniform(0.5, 1.5, 16), rng.normal(0, 0.1, 16), rng.normal(0, 0.1, 16), rng.uniform(0.5, 2, 16)]
    )
    path = tmp_path_factory.mktemp("keras") / "my_cnn.keras"
    model.save(path)
    return model, path


def test_a_keras_model_file_is_a_network_with_the_models_own_activations(keras_cnn):
    import keras

    model, path = keras_cnn
    network, params = filterviz.from_keras(path)
    assert network.name == "my_cnn"
    assert network.layer_names == ("rescaling", "edges", "pool", "shapes", "shapes_bn", "shapes_relu")
    assert network.visual_layers == ("edges", "shapes")  # the convolutions, drawn by a sweep by default
    assert network.layer("shapes").channels == 16
    x = images()
    for layer in network.layer_names:
        theirs = keras.Model(model.inputs, model.get_layer(layer).output)(x)
        ours = filterviz.activations(params, x, layer, network=network)
        assert relative_error(ours, theirs) <= 1e-6, layer
    assert network.minimum_size("shapes") == 2  # one pooling: a 1x1 image leaves nothing


def test_a_keras_model_runs_every_method_batched(keras_cnn):
    model, _ = keras_cnn
    network, params = filterviz.from_keras(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the model is called as Keras expects: no warnings
        assert rises(params, network, "shapes_bn")
    assert rises(params, network, "shapes", method="lucid")
    # Keras' ReLU has no gradient where it is off (no redirection inside Keras layers), but the filters
    # that fire at the start still rise.
    live = filterviz.render(
        params, filterviz.channel("shapes_relu", range(16)), network=network, size=SIZE, steps=0
    )
    alive = np.flatnonzero(live.activations > 0)[:4]
    assert len(alive) and rises(params, network, "shapes_relu", filters=alive)
    result = filterviz.render(
        params, filterviz.channel("edges", range(8)), network=network, method="maco", size=SIZE, steps=2
    )
    # MaCo's pictures carry its transparency: RGBA.
    assert result.pictures.shape == (8, 1, SIZE, SIZE, 4) and np.isfinite(result.activations).all()
    ascended = filterviz.ascend(params, "shapes", [0, 3], images(1)[0], steps=3, network=network)
    assert ascended.shape == (2, SIZE, SIZE, 3)


@pytest.mark.slow
def test_mobilenetv2_from_keras_applications(tmp_path):
    import keras

    model = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(None, None, 3), alpha=0.35
    )
    network, params = filterviz.from_keras(model, preprocessing="tf")
    assert network.preprocessing == "tf" and "block_3_expand" in network.visual_layers
    x = images(2, SIZE)
    for layer in ("Conv1", "block_3_expand_relu", "block_6_project_BN"):
        theirs = keras.Model(model.inputs, model.get_layer(layer).output)(x)
        assert relative_error(filterviz.activations(params, x, layer, network=network), theirs) <= 1e-6
    result = filterviz.render(
        params, filterviz.channel("block_3_expand", range(4)), network=network, size=SIZE, steps=1
    )
    assert result.pictures.shape == (4, 1, SIZE, SIZE, 3) and np.isfinite(result.activations).all()


def test_the_command_line_takes_a_keras_model_file(keras_cnn, tmp_path, capsys):
    _, path = keras_cnn
    assert main(["layers", "--model", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "edges" in shown and "shapes_relu" in shown and "block1_conv1" not in shown
    out = tmp_path / "grid.png"
    common = ["--model", str(path), "--size", str(SIZE), "--steps", "2", "--quiet"]
    assert main(["filters", "shapes", "--filters", "0-3", *common, "--out", str(out)]) == 0
    assert filterviz.load_image(out).shape[0] > SIZE
    folder = tmp_path / "sweep"
    assert main(["sweep", "--out", str(folder), "--filters", "0-1", *common]) == 0
    record = json.loads((folder / "sweep.json").read_text())
    assert record["settings"]["network"] == "my_cnn" and record["layers"]["shapes"] == 16
    assert (folder / "index.html").is_file() and (folder / "shapes" / "0001.png").is_file()
    capsys.readouterr()
    # A resume with another network is refused; bad model files are one line and exit 2.
    assert (
        main(
            [
                "sweep",
                "--out",
                str(folder),
                "--filters",
                "0-1",
                "--size",
                str(SIZE),
                "--steps",
                "2",
                "--quiet",
            ]
        )
        == 2
    )
    assert "network: 'my_cnn' in the folder, 'vgg16' asked" in capsys.readouterr().err
    for arguments, message in [
        (["--model", str(tmp_path / "absent.keras")], "no such file"),
        (["--model", str(path), "--weights", str(path)], "drop --weights"),
        (["--model", "resnet18"], "unknown network"),
    ]:
        assert main(["filters", "shapes", "--out", str(tmp_path / "x.png"), *arguments]) == 2
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error and len(error.strip().splitlines()) == 1
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    assert main(["layers", "--model", str(broken)]) == 2
    assert "not a Keras model" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# Flax linen and NNX


def test_a_linen_module_is_a_network(tmp_path):
    import flax.linen as nn

    class Small(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x / 255.0))
            x = nn.max_pool(x, (2, 2), (2, 2))
            x = nn.relu(nn.Conv(12, (3, 3), name="conv2")(x))
            return nn.Dense(2, name="head")(x.mean(axis=(1, 2)))

    module = Small()
    variables = module.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
    network, params = filterviz.from_flax(module, variables)
    assert network.layer_names == ("conv1", "conv2") and network.layer("conv2").channels == 12
    x = images()
    weights = variables["params"]
    hidden = nn.relu(nn.Conv(8, (3, 3)).apply({"params": weights["conv1"]}, x / 255.0))
    expected = nn.Conv(12, (3, 3)).apply({"params": weights["conv2"]}, nn.max_pool(hidden, (2, 2), (2, 2)))
    np.testing.assert_allclose(
        filterviz.activations(params, x, "conv2", network=network), expected, rtol=1e-6, atol=1e-6
    )
    assert rises(params, network, "conv2")
    assert rises(params, network, "conv1", method="lucid")
    result = filterviz.sweep(
        params, tmp_path, network=network, filters=[0, 1], size=(SIZE, SIZE), steps=2, progress=False
    )
    assert result.written == 4 and filterviz.write_atlas(tmp_path).problems == ()


def test_an_nnx_module_is_a_network_and_a_grayscale_model_sees_rgb():
    from flax import nnx

    class Gray(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.conv1 = nnx.Conv(1, 6, (3, 3), rngs=rngs)
            self.conv2 = nnx.Conv(6, 10, (3, 3), strides=2, rngs=rngs)

        def __call__(self, x):
            return self.conv2(nnx.relu(self.conv1(x / 255.0)))

    model = Gray(nnx.Rngs(0))
    network, state = filterviz.from_flax(model, channels=1)
    assert network.layer_names == ("conv1", "conv2") and network.layer("conv2").channels == 10
    x = images()
    expected = model.conv2(nnx.relu(model.conv1(x.mean(axis=-1, keepdims=True) / 255.0)))
    np.testing.assert_allclose(
        filterviz.activations(state, x, "conv2", network=network), expected, rtol=1e-6, atol=1e-6
    )
    assert rises(state, network, "conv2")
    with pytest.raises(filterviz.SettingError, match=r"linen or flax\.nnx"):
        filterviz.from_flax(object())


# ----------------------------------------------------------------------------------------------------
# Objectives of your own


def difference(acts, pair):
    # Module level, so every call shares one compiled program.
    return acts["block1_conv2"][..., pair[0]].mean() - acts["block1_conv2"][..., pair[1]].mean()


def test_an_objective_of_your_own_is_batched_and_composes(random_params):
    pairs = np.array([[3, 5], [7, 1]])
    custom = filterviz.objective(difference, "block1_conv2", each=pairs)
    settings = {"method": "notebook", "size": SIZE, "steps": 4, "seed": 2}
    ours = filterviz.render(random_params, custom, **settings)
    keys = filter_keys(2, [0, 1])  # what render gives objectives 0 and 1 with seed 2
    built_in = [
        filterviz.render(
            random_params,
            filterviz.channel("block1_conv2", int(a)) - filterviz.channel("block1_conv2", int(b)),
            keys=keys[row : row + 1],
            **settings,
        )
        for row, (a, b) in enumerate(pairs)
    ]
    for row in range(2):
        np.testing.assert_allclose(ours.pixels[row], built_in[row].pixels[0], rtol=1e-5, atol=1e-3)
        assert ours.activations[row] == pytest.approx(built_in[row].activations[0], rel=1e-5)
    plus_diversity = custom + 10.0 * filterviz.diversity("block1_conv1")
    assert plus_diversity.batch_size() == 2 and plus_diversity.layers == ("block1_conv2", "block1_conv1")
    both = filterviz.render(random_params, plus_diversity, images_per_filter=2, **settings)
    assert both.pixels.shape == (2, 2, SIZE, SIZE, 3)


def test_objectives_of_your_own_refuse_what_cannot_work(random_params):
    with pytest.raises(filterviz.SettingError, match="callable"):
        filterviz.objective("not a function", "block1_conv1")
    with pytest.raises(filterviz.SettingError, match="name the layers"):
        filterviz.objective(difference)
    with pytest.raises(filterviz.UnknownLayerError, match="block9"):
        filterviz.render(random_params, filterviz.objective(difference, "block9_conv1"), size=SIZE)


def test_keras_is_only_imported_for_a_keras_model():
    import subprocess
    import sys

    # Every module of the package but the one that reads Keras models, as a sweep or the CLI loads them.
    code = (
        "import importlib, pkgutil, sys, filterviz; "
        "[importlib.import_module(f'filterviz.{m.name}') for m in pkgutil.iter_modules(filterviz.__path__) "
        "if m.name not in ('external', '__main__')]; "
        "print('keras' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_dataset_examples_of_a_keras_model_beside_its_sweep(keras_cnn, tmp_path):
    from test_examples import brute_force_top_k

    _, path = keras_cnn
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(3)
    for index in range(6):
        Image.fromarray(rng.uniform(0, 255, (20, 24, 3)).astype(np.uint8)).save(photos / f"{index}.png")
    folder = tmp_path / "sweep"
    common = ["--model", str(path), "--size", "16", "--quiet"]
    assert main(["sweep", "--out", str(folder), "--filters", "0-1", "--steps", "1", *common]) == 0
    assert main(["examples", str(photos), "--out", str(folder), "--k", "2", *common]) == 0
    records = [json.loads(line) for line in (folder / "examples.jsonl").read_text().splitlines()]
    keys = [(record["layer"], record["filter"]) for record in records]
    assert keys == [("edges", f) for f in range(8)] + [("shapes", f) for f in range(16)]
    # The same hits as a brute force over the model's own activations of the same fitted photos.
    network, params = filterviz.from_keras(path)
    names = sorted(p.name for p in photos.iterdir())
    fitted = np.stack([load_fitted(photos / name, 16) for name in names]).astype(np.float32)
    for layer in ("edges", "shapes"):
        _, best = brute_force_top_k(
            np.asarray(filterviz.activations(params, fitted, layer, network=network)), 2
        )
        for record in records:
            if record["layer"] == layer:
                hits = [(hit["image"], (hit["y"], hit["x"])) for hit in record["hits"]]
                assert hits == [(names[i], position) for i, position in best[record["filter"]]]
    # Receptive fields from the model's layers: 3x3, then a 2x2 pool, then 3x3: 8 pixels, stride 2.
    (top, left, bottom, right), stride = receptive_field(network, params, "shapes")
    assert (bottom - top, right - left, stride) == (8, 8, (2, 2))
    interior = [h for r in records if r["layer"] == "shapes" for h in r["hits"] if 2 <= h["y"] <= 5]
    assert interior and all(load_image(folder / h["crop"]).shape[0] == 8 for h in interior)
    data = page_data(folder / "index.html")  # the atlas shows the examples beside the sweep's pictures
    shapes = next(layer for layer in data["layers"] if layer["name"] == "shapes")
    assert [len(f["examples"]["hits"]) for f in shapes["filters"]] == [2, 2]
