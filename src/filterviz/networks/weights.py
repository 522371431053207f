"""A network's weights from Keras HDF5 files: reading, matching to the network, finding, downloading.

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

import hashlib
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from filterviz.core.network import Network, Params
from filterviz.errors import WeightsError
from filterviz.networks import BUILTIN, get_network

# ----------------------------------------------------------------------------------------------------
# Reading


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
        params[group] = {name: chosen[name] for name in names if chosen.get(name) is not None}
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


# ----------------------------------------------------------------------------------------------------
# Finding and downloading


def keras_cache_dir() -> Path:
    """Where Keras caches downloaded application weights: ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def _project_weights_dir() -> Path:
    # A source checkout's weights/ folder, two levels above src/filterviz/.
    return Path(__file__).resolve().parents[2] / "weights"


def weights_variable(network: Network | str = "vgg16") -> str:
    """The environment variable naming a network's weights file: ``FILTERVIZ_WEIGHTS`` for VGG16,
    ``FILTERVIZ_WEIGHTS_<NAME>`` for the others (``FILTERVIZ_WEIGHTS_RESNET50``)."""
    name = get_network(network).name
    return "FILTERVIZ_WEIGHTS" if name == "vgg16" else f"FILTERVIZ_WEIGHTS_{name.upper()}"


def _file_name(network: Network) -> str:
    if network.weights is None:
        raise WeightsError(None, f"{network.name} has no published weights; give a weights file")
    return network.weights.file_name


def weights_search_path(network: Network | str = "vgg16") -> list[Path]:
    """The places :func:`load_weights` looks for a network's file, in order (its variable first)."""
    network = get_network(network)
    variable, file_name = weights_variable(network), _file_name(network)
    places = []
    if os.environ.get(variable):
        places.append(Path(os.environ[variable]).expanduser())
    places += [
        Path("weights") / file_name,
        _project_weights_dir() / file_name,
        keras_cache_dir() / file_name,
    ]
    unique = []
    for place in places:
        if place.resolve() not in {known.resolve() for known in unique}:
            unique.append(place)
    return unique


def find_weights(network: Network | str = "vgg16") -> Path | None:
    """The first existing file on :func:`weights_search_path`, or None.

    The network's variable (``$FILTERVIZ_WEIGHTS`` for VGG16), when set, is the only candidate: a user
    who names a file means that file.
    """
    network = get_network(network)
    variable = weights_variable(network)
    if os.environ.get(variable):
        return Path(os.environ[variable]).expanduser()
    for place in weights_search_path(network):
        if place.is_file():
            return place
    return None


def _progress_bar(total: int | None, description: str) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency, but a bar is never essential
        return None
    return tqdm(
        total=total, unit="B", unit_scale=True, desc=description, disable=not sys.stderr.isatty(), leave=False
    )


def download_weights(
    directory: str | os.PathLike[str] | None = None,
    *,
    network: Network | str = "vgg16",
    url: str | None = None,
    md5: str | None = "official",
    opener: Callable[..., Any] = urllib.request.urlopen,
    timeout: float = 60.0,
) -> Path:
    """Download a network's weights into ``directory`` (default: Keras' cache), check the md5, return the
    path. ``url`` and ``md5`` default to the official file's (``md5=None`` skips the check).

    The bytes go to a temporary file beside the target and are renamed into place only once complete
    and verified, so no partial or corrupt file is ever left under the final name. Raises
    :class:`WeightsError` on a network failure, a short transfer or a checksum mismatch, saying where
    to put the file by hand.
    """
    network = get_network(network)
    filename = _file_name(network)
    url = url or network.weights.url
    md5 = network.weights.md5 if md5 == "official" else md5
    directory = Path(directory) if directory is not None else keras_cache_dir()
    target = directory / filename
    by_hand = (
        f"without internet access, copy {filename} into ./weights/ or {keras_cache_dir()}, "
        f"or set {weights_variable(network)} to its path"
    )
    # The folders this download creates (e.g. ~/.keras/models) go again if it fails: nothing is left.
    created = [folder for folder in (directory, *directory.parents) if not folder.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        temporary = tempfile.NamedTemporaryFile(
            dir=directory, prefix=f".{filename}.", suffix=".part", delete=False
        )
    except OSError as error:
        _remove_empty(created)
        raise WeightsError(target, f"cannot write the download ({error.strerror or error})") from None
    digest = hashlib.md5()
    received = 0
    try:
        with temporary:
            try:
                with opener(url, timeout=timeout) as response:
                    length = response.headers.get("Content-Length")
                    expected = int(length) if length else None
                    bar = _progress_bar(expected, filename)
                    while chunk := response.read(1 << 20):
                        try:
                            temporary.write(chunk)
                        except OSError as error:
                            raise WeightsError(
                                target, f"cannot write the download ({error.strerror or error})"
                            ) from None
                        digest.update(chunk)
                        received += len(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                    if bar is not None:
                        bar.close()
            except WeightsError:
                raise
            except (urllib.error.URLError, OSError, ValueError) as error:
                reason = getattr(error, "reason", None) or error
                raise WeightsError(
                    None, f"could not download the {network.name} weights from {url} ({reason}); {by_hand}"
                ) from None
            temporary.flush()
            os.fsync(temporary.fileno())
        if expected is not None and received != expected:
            raise WeightsError(
                None, f"download from {url} stopped after {received:,} of {expected:,} bytes; {by_hand}"
            )
        if md5 is not None and digest.hexdigest() != md5:
            raise WeightsError(
                None, f"download from {url} has md5 {digest.hexdigest()}, expected {md5}; {by_hand}"
            )
        os.replace(temporary.name, target)
    finally:
        if os.path.exists(temporary.name):
            os.unlink(temporary.name)
        if not target.exists():
            _remove_empty(created)
    return target


def _remove_empty(folders: list[Path]) -> None:
    # Deepest first, and only while empty: a folder someone filled meanwhile stays.
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def load_weights(
    path: str | os.PathLike[str] | None = None,
    *,
    network: Network | str = "vgg16",
    download: bool = True,
    url: str | None = None,
    md5: str | None = "official",
) -> Params:
    """Load a network's weights as its params pytree (VGG16's ImageNet weights by default).

    Args:
      path: a Keras HDF5 weights file (legacy or Keras 3 layout). When None, the first of the network's
        variable (``$FILTERVIZ_WEIGHTS`` for VGG16), ``weights/<file>`` and Keras' cache
        ``~/.keras/models/`` that exists; failing all, a download from the official Keras URL.
      network: ``"vgg16"``, ``"vgg19"``, ``"resnet50"`` or a :class:`~filterviz.network.Network`.
      download: allow that download.
      url, md5: where to download from and the checksum to demand (default: the official file's).

    Returns:
      ``{layer: {name: float32 array}}``; for VGG16 ``{"block1_conv1": {"kernel": [3, 3, 3, 64],
      "bias": [64]}, ...}``.

    Raises:
      WeightsError: the file is missing, unreadable, truncated, foreign, damaged or another network's
        (the message names both), or the download failed; the message names the file.
    """
    network = get_network(network)
    if path is None:
        path = find_weights(network)
        if path is None:
            if not download:
                raise WeightsError(
                    None,
                    f"no {network.name} weights found (looked in "
                    f"{', '.join(map(str, weights_search_path(network)))}); copy {_file_name(network)} into "
                    f"one of them or set {weights_variable(network)}",
                )
            path = download_weights(network=network, url=url, md5=md5)
    params = match_weights(network, read_keras_h5(path), path)
    return {
        group: {name: jnp.asarray(array) for name, array in arrays.items()}
        for group, arrays in params.items()
    }


def content_digest(params: Any, network: Network | str = "vgg16") -> str:
    """sha256 over every tensor as little-endian float32, in the network's parameter order (for a
    network of unknown shapes, e.g. a user's model: every leaf of ``params`` by its sorted path).

    Identifies the tensors whatever the file's layout: the legacy and the Keras 3 file of the same
    weights give the same digest.
    """
    shapes = get_network(network).parameter_shapes
    if shapes is not None:
        tensors = [params[group][name] for group, names in shapes.items() for name in names]
    else:
        leaves = jax.tree_util.tree_flatten_with_path(params)[0]
        tensors = [leaf for _, leaf in sorted(leaves, key=lambda item: jax.tree_util.keystr(item[0]))]
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(np.ascontiguousarray(np.asarray(tensor), dtype="<f4").tobytes())
    return digest.hexdigest()
