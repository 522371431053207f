"""Helpers for the tests: the reference digest and a writer of Keras legacy-layout H5 files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from filterviz.network import network

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
