"""A network's weights from Keras HDF5 files: reading them, and matching them to the network.

Two layouts are read:

* Keras' legacy layout, as in the official ``*_weights_tf_dim_ordering_tf_kernels_notop.h5`` files: a root
  attribute ``layer_names``, a per-layer attribute ``weight_names``, and datasets such as
  ``block1_conv1/block1_conv1_W_1:0`` (also found under ``model_weights/`` in a whole-model file);
* the Keras 3 ``*.weights.h5`` layout that ``model.save_weights(...)`` writes: ``layers/<key>/vars/0, 1,
  ...``, the layer's name in the ``vars`` group's ``name`` attribute, or, where Keras wrote none, keys by
  class (``conv2d``, ``conv2d_1`` ...) in the model's layer order.

Reading gives the file's tensors by layer; :func:`match_weights` then gives them to a network's
parameters by name (or by class and order), checks every shape and value, and names the network a file
belongs to when it is another one's.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np

from filterviz.core.network import Network, Params
from filterviz.errors import WeightsError
from filterviz.networks import BUILTIN, get_network


class FileWeights(NamedTuple):
    """A Keras weights file's tensors: ``named`` ``{layer: [arrays in Keras' order]}``, and ``by_class``
    ``{class key: [[arrays], ...]}`` in the model's layer order, for groups the file does not name."""

    named: dict[str, list[np.ndarray]]
    by_class: dict[str, list[list[np.ndarray]]]


def _decode(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _read_legacy(root: h5py.Group) -> FileWeights:
    named = {}
    for layer in (_decode(name) for name in root.attrs["layer_names"]):
        group = root[layer]
        names = [_decode(name) for name in group.attrs.get("weight_names", [])]
        if names:
            named[layer] = [np.asarray(group[name], dtype=np.float32) for name in names]
    return FileWeights(named, {})


def _read_keras3(layers: h5py.Group) -> FileWeights:
    named: dict[str, list[np.ndarray]] = {}
    unnamed: dict[str, list[tuple[int, list[np.ndarray]]]] = {}

    def visit(path: str, item: Any) -> None:
        if isinstance(item, h5py.Group) and path.split("/")[-1] == "vars" and len(item):
            key = path.split("/")[-2]
            arrays = [np.asarray(item[k], dtype=np.float32) for k in sorted(item, key=int)]
            if "name" in item.attrs:
                named[_decode(item.attrs["name"])] = arrays
                return
            named[key] = arrays  # some Keras versions key groups by the layer's own name
            match = re.fullmatch(r"([a-z_0-9]*?)(?:_(\d+))?", key)
            kind, number = (match.group(1), int(match.group(2) or 0)) if match else (key, 0)
            unnamed.setdefault(kind, []).append((number, arrays))

    layers.visititems(visit)
    by_class = {
        kind: [arrays for _, arrays in sorted(found, key=lambda x: x[0])] for kind, found in unnamed.items()
    }
    return FileWeights(named, by_class)


def read_keras_h5(path: str | os.PathLike[str]) -> FileWeights:
    """Every weight tensor of a Keras HDF5 weights file, in either layout, unchecked.

    Raises :class:`WeightsError` for a missing, unreadable, truncated or foreign file.
    """
    if not isinstance(path, str | os.PathLike):
        raise WeightsError(None, f"a weights file is a path, got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise WeightsError(path, "no such file")
    if path.is_dir():
        raise WeightsError(path, "is a directory, not a weights file")
    if not path.is_file():
        raise WeightsError(path, "is not a regular file")
    try:
        with h5py.File(path, "r") as file:
            root = file.get("model_weights", file)
            if "layer_names" in root.attrs:
                return _read_legacy(root)
            if "layers" in root and isinstance(root["layers"], h5py.Group):
                return _read_keras3(root["layers"])
            raise WeightsError(
                path,
                "not a Keras weights file (no 'layer_names' attribute and no 'layers' group)",
            )
    except WeightsError:
        raise
    except OSError as error:
        message = str(error)
        if "truncated" in message:
            reason = f"truncated HDF5 file ({path.stat().st_size:,} bytes); download or copy it again"
        elif "signature" in message:
            reason = "not an HDF5 file"
        else:
            reason = f"cannot read HDF5 file ({message})"
        raise WeightsError(path, reason) from None
    except (KeyError, ValueError, TypeError) as error:
        raise WeightsError(path, f"not a Keras weights file ({error})") from None


_CLASS_KEYS = {"Conv2D": "conv2d", "BatchNormalization": "batch_normalization", "Dense": "dense"}


def _keras_kind(network: Network, group: str) -> str:
    # The key Keras 3 gives a layer of this group's class in a weights file without names.
    for layer in network.layers:
        if layer.name == group:
            return _CLASS_KEYS.get(layer.kind, layer.kind.lower())
    return "conv2d"


def _assign(network: Network, file: FileWeights) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """The file's tensors given to ``network``'s parameter groups, and every problem found."""
    shapes = network.parameter_shapes or {}
    groups: dict[str, list[np.ndarray]] = {}
    problems: list[str] = []
    if any(group in file.named for group in shapes):
        foreign = sorted(
            name
            for name, arrays in file.named.items()
            if name not in shapes and any(array.ndim == 4 for array in arrays)
        )
        if foreign:
            shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
            problems.append(f"the file holds convolutions {network.name} does not have: {shown}")
        groups = {group: file.named[group] for group in shapes if group in file.named}
    else:
        queues = {kind: list(entries) for kind, entries in file.by_class.items()}
        expected_counts: dict[str, int] = {}
        for group in shapes:
            kind = _keras_kind(network, group)
            expected_counts[kind] = expected_counts.get(kind, 0) + 1
            if queues.get(kind):
                groups[group] = queues[kind].pop(0)
        for kind, count in expected_counts.items():
            found = len(file.by_class.get(kind, []))
            if found != count:
                problems.append(f"{found} {kind} layers where {network.name} has {count}")
    missing = [group for group in shapes if group not in groups]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        problems.append(f"missing layers {shown}")
    params: dict[str, dict[str, np.ndarray]] = {}
    for group, arrays in groups.items():
        names = list(shapes[group])
        if len(arrays) < len(names):
            problems.append(f"{group} holds {len(arrays)} tensors, expected {len(names)}")
            continue
        # Keras stores them in the order the parameters are listed (kernel, bias; gamma, beta, mean,
        # variance); a legacy file may put a conv's bias first, so conv tensors also go by rank.
        if set(names) == {"kernel", "bias"}:
            by_rank = {array.ndim: array for array in arrays}
            chosen = {"kernel": by_rank.get(4), "bias": by_rank.get(1)}
        else:
            chosen = dict(zip(names, arrays, strict=False))
        for name in names:
            array = chosen.get(name)
            if array is None:
                problems.append(f"{group} has no {name}")
            elif tuple(array.shape) != tuple(shapes[group][name]):
                problems.append(
                    f"{group} {name} has shape {tuple(array.shape)}, expected {tuple(shapes[group][name])}"
                )
        params[group] = {name: array for name in names if (array := chosen.get(name)) is not None}
    return params, problems


def match_weights(network: Network | str, file: FileWeights, path: object = None) -> Params:
    """``file``'s tensors as ``network``'s parameters (numpy), every shape and value checked.

    Raises :class:`WeightsError` naming the file and what is wrong; where the file is another built-in
    network's weights, the message names both networks.
    """
    network = get_network(network)
    params, problems = _assign(network, file)
    if problems:
        other = identify(file, exclude=network.name)
        if other is not None:
            raise WeightsError(path, f"these are {other}'s weights, not {network.name}'s: {problems[0]}")
        raise WeightsError(path, f"not {network.name} weights: " + "; ".join(problems[:3]))
    broken = [
        f"{group} {name}"
        for group, arrays in params.items()
        for name, array in arrays.items()
        if not np.isfinite(array).all()
    ]
    if broken:
        raise WeightsError(path, f"damaged weights: NaN or infinite values in {', '.join(broken[:6])}")
    return params


def identify(file: FileWeights, exclude: str | None = None) -> str | None:
    """The built-in network whose weights ``file`` holds, if one fits exactly."""
    for name, network in BUILTIN.items():
        if name != exclude and not _assign(network, file)[1]:
            return name
    return None
