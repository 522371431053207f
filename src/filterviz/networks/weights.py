"""A network's weights: where they are found, fetched from their official address, loaded and digested.

With no path, :func:`load_weights` looks in ``$FILTERVIZ_WEIGHTS`` (``_VGG19``, ``_RESNET50``), the
project's ``weights/`` folder and Keras' cache, then downloads the official file (md5-checked, renamed
into place only when complete); :mod:`filterviz.networks.h5` reads and matches it.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from filterviz.core.network import Network, Params
from filterviz.errors import WeightsError
from filterviz.io.download import download_file
from filterviz.networks import get_network
from filterviz.networks.h5 import match_weights, read_keras_h5

# ----------------------------------------------------------------------------------------------------
# Reading


# ----------------------------------------------------------------------------------------------------
# Finding and downloading


def keras_cache_dir() -> Path:
    """Where Keras caches downloaded application weights: ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def _project_weights_dir() -> Path:
    # A source checkout's weights/ folder: the package is src/filterviz/networks/weights.py in the clone,
    # so the clone is three folders above this file's. (Installed elsewhere, there is no such folder.)
    return Path(__file__).resolve().parents[3] / "weights"


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
    unique: list[Path] = []
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
    directory = Path(directory) if directory is not None else keras_cache_dir()
    by_hand = (
        f"without internet access, copy {filename} into ./weights/ or {keras_cache_dir()}, "
        f"or set {weights_variable(network)} to its path"
    )
    official = network.weights
    if url is None:
        if official is None:
            raise WeightsError(None, f"{network.name} has no official weights file to download; pass url")
        url = official.url
    if md5 == "official":
        md5 = official.md5 if official is not None else None
    return download_file(
        url,
        directory / filename,
        digest=("md5", md5),
        what=f"the {network.name} weights",
        by_hand=by_hand,
        opener=opener,
        timeout=timeout,
    )


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
      network: ``"vgg16"``, ``"vgg19"``, ``"resnet50"`` or a :class:`~filterviz.core.network.Network`.
      download: allow that download.
      url: where to download from (default: the official file's address).
      md5: the checksum to demand of what arrives (default: the official file's).

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
    # Put on the device as they are: jnp.asarray would compile a program per tensor shape.
    return {
        group: {name: jax.device_put(array) for name, array in arrays.items()}
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
