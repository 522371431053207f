"""Helpers for the tests (and the parity report): the reference digest, the atlas page's data, a writer
of Keras legacy-layout H5 files, Keras networks with random weights saved in both layouts, and
activations compared with Keras'."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import jax
import numpy as np

from filterviz.core.network import Network
from filterviz.networks import get_network as network
from filterviz.networks.weights import load_weights

CONTENT_SHA256 = "d9a27cc1fc7f975ef8cff49180e794ccd7c4bc868ebb49740803b3bbaa8dbefd"
"""Digest of the ImageNet VGG16 tensors (every kernel then bias, float32 LE, in layer order)."""


def write_legacy_h5(path: Path, flat: dict, layers=None, *, kernel_shapes=None) -> Path:
    """Write weights in the official file's legacy layout (layer_names, weight_names, W_1:0 / b_1:0)."""
    layers = list(network("vgg16").layer_names) if layers is None else list(layers)
    with h5py.File(path, "w") as file:
        file.attrs["layer_names"] = np.array([b"input_1"] + [name.encode() for name in layers])
        file.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        for layer in layers:
            group = file.create_group(layer)
            if layer in flat:
                names = [f"{layer}_W_1:0", f"{layer}_b_1:0"]
                group.attrs["weight_names"] = np.array([name.encode() for name in names])
                kernel = np.asarray(flat[layer]["kernel"])
                if kernel_shapes and layer in kernel_shapes:
                    kernel = np.zeros(kernel_shapes[layer], np.float32)
                group.create_dataset(names[0], data=kernel)
                group.create_dataset(names[1], data=np.asarray(flat[layer]["bias"]))
            else:
                group.attrs["weight_names"] = np.array([], dtype="S1")
    return path


def write_network_h5(path: Path, net: Network, params) -> Path:
    """Write any built-in network's params in Keras' legacy layout (``layer_names``, and each layer's
    ``weight_names`` in Keras' order), as the official ``*_notop.h5`` files hold them."""
    shapes = net.parameter_shapes
    with h5py.File(path, "w") as file:
        file.attrs["layer_names"] = np.array([group.encode() for group in shapes])
        for group, names in shapes.items():
            layer = file.create_group(group)
            keys = [f"{group}/{name}:0" for name in names]
            layer.attrs["weight_names"] = np.array([key.encode() for key in keys])
            for key, name in zip(keys, names, strict=True):
                layer.create_dataset(key, data=np.asarray(params[group][name], np.float32))
    return path


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


def relative_error(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.linalg.norm(ours - theirs) / (np.linalg.norm(theirs) + 1e-30))


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


def page_text(page: Path) -> str:
    """The atlas page and every layer data file it names, as one text."""
    text = page.read_text()
    return text + "".join(path.read_text() for path in sorted((page.parent / "atlas").glob("*.js")))


def page_data(page: Path) -> dict:
    """The atlas page's data, each layer's filters read from its data file; no raw <, > or & anywhere."""
    text = page.read_text()
    block = text.split('<script id="atlas-data" type="application/json">')[1].split("</script>")[0]
    assert "<" not in block and ">" not in block and "&" not in block
    data = json.loads(block)
    for layer in data["layers"]:
        if "filters" not in layer:
            mark, call = (page.parent / layer["data"]).read_text().splitlines()
            assert (
                mark == "/* filterviz atlas data */"
                and call.startswith("atlasLayer(")
                and call.endswith(");")
            )
            assert "<" not in call and ">" not in call and "&" not in call
            content = json.loads(call[len("atlasLayer(") : -2])
            assert content["name"] == layer["name"]
            layer["filters"] = content["filters"]
    return data
