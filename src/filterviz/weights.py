"""Reading the VGG16 ImageNet weights from Keras HDF5 files, finding them, and downloading them.

Two layouts are read:

* the Keras legacy layout of the official file ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``:
  a root attribute ``layer_names``, a per-layer attribute ``weight_names``, and datasets such as
  ``block1_conv1/block1_conv1_W_1:0`` (also found under ``model_weights/`` in a whole-model file);
* the Keras 3 ``*.weights.h5`` layout that ``model.save_weights(...)`` writes: ``layers/<key>/vars/0``
  (kernel) and ``vars/1`` (bias), the layer's name in the ``vars`` group's ``name`` attribute.

Reading gives a flat ``{layer: {"kernel": float32[3, 3, C_in, C_out], "bias": float32[C_out]}}`` which is
then checked against the model's shapes, layer by layer, and fails loudly on any gap or mismatch.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import jax.numpy as jnp
import numpy as np

from filterviz.errors import WeightsError
from filterviz.model import CONV_LAYERS, Params, parameter_shapes

WEIGHTS_FILENAME = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + WEIGHTS_FILENAME
WEIGHTS_MD5 = "6d6bbae143d832006294945121d1f1fc"
"""md5 of the official file, the hash Keras itself checks after downloading it."""
WEIGHTS_ENV = "FILTERVIZ_WEIGHTS"

FlatWeights = dict[str, dict[str, np.ndarray]]


# ----------------------------------------------------------------------------------------------------
# Reading


def _decode(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _kernel_and_bias(arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    # Legacy files name the tensors W and b, Keras 2 kernel:0 and bias:0, Keras 3 0 and 1: tell them
    # apart by rank, which is unambiguous for a conv layer.
    by_rank = {array.ndim: array for array in arrays}
    out = {}
    if 4 in by_rank:
        out["kernel"] = by_rank[4]
    if 1 in by_rank:
        out["bias"] = by_rank[1]
    return out


def _read_legacy(root: h5py.Group) -> FlatWeights:
    flat = {}
    for layer in (_decode(name) for name in root.attrs["layer_names"]):
        group = root[layer]
        names = [_decode(name) for name in group.attrs.get("weight_names", [])]
        if names:
            flat[layer] = _kernel_and_bias([np.asarray(group[name], dtype=np.float32) for name in names])
    return flat


def _read_keras3(layers: h5py.Group) -> FlatWeights:
    found: list[tuple[str, str | None, list[np.ndarray]]] = []

    def visit(path: str, item: Any) -> None:
        if isinstance(item, h5py.Group) and path.split("/")[-1] == "vars" and len(item):
            key = path.split("/")[-2]
            name = _decode(item.attrs["name"]) if "name" in item.attrs else None
            arrays = [np.asarray(item[k], dtype=np.float32) for k in sorted(item, key=int)]
            found.append((key, name, arrays))

    layers.visititems(visit)
    flat = {}
    unnamed = []
    for key, name, arrays in found:
        if name is None and key in CONV_LAYERS:
            name = key
        if name is None:
            unnamed.append((key, arrays))
        else:
            flat[name] = _kernel_and_bias(arrays)
    # Keras versions that write no name attribute key the groups by class: conv2d, conv2d_1, ... in
    # creation order, which for VGG16 is the order of its conv layers.
    convs = sorted(
        (item for item in unnamed if item[0].startswith("conv2d")),
        key=lambda item: int(item[0].rpartition("_")[2]) if "_" in item[0] else 0,
    )
    if len(convs) == len(CONV_LAYERS) and not flat:
        for layer, (_, arrays) in zip(CONV_LAYERS, convs, strict=True):
            flat[layer] = _kernel_and_bias(arrays)
    return flat


def read_keras_h5(path: str | os.PathLike[str]) -> FlatWeights:
    """Read every conv layer's kernel and bias from a Keras HDF5 weights file, in either layout.

    Returns ``{layer: {"kernel": float32[3, 3, C_in, C_out], "bias": float32[C_out]}}`` for the layers the
    file holds, unchecked. Raises :class:`WeightsError` for a missing, unreadable, truncated or foreign file.
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


def check_weights(flat: Mapping[str, Mapping[str, np.ndarray]], path: object = None) -> FlatWeights:
    """Match loaded arrays to the model's parameters by layer name and shape; fail on any gap.

    Layers the model does not have (a file with the classifier top, say) are ignored. Returns the conv
    layers' arrays in model order. Raises :class:`WeightsError` naming every missing layer or wrong shape.
    """
    expected = parameter_shapes()
    # Another network's convolutions (VGG19's block3_conv4, a ResNet's conv2_block1_1_conv ...): the
    # file is not VGG16's, even where VGG16's own names are all in it with the right shapes.
    foreign = sorted(
        layer
        for layer, arrays in flat.items()
        if layer not in expected and any(np.ndim(array) == 4 for array in arrays.values())
    )
    if foreign:
        guess = " (VGG19's)" if set(foreign) >= {"block3_conv4", "block4_conv4", "block5_conv4"} else ""
        shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
        raise WeightsError(
            path, f"not VGG16 weights: the file holds convolutions VGG16 does not have{guess}: {shown}"
        )
    missing = [layer for layer in expected if layer not in flat]
    if missing:
        raise WeightsError(path, f"not VGG16 weights: missing layers {', '.join(missing)}")
    problems = []
    for layer, shapes in expected.items():
        for name, shape in shapes.items():
            array = flat[layer].get(name)
            if array is None:
                problems.append(f"{layer} has no {name}")
            elif tuple(array.shape) != shape:
                problems.append(f"{layer} {name} has shape {tuple(array.shape)}, expected {shape}")
    if problems:
        raise WeightsError(path, "not VGG16 weights: " + "; ".join(problems))
    broken = [
        f"{layer} {name}"
        for layer, shapes in expected.items()
        for name in shapes
        if not np.isfinite(flat[layer][name]).all()
    ]
    if broken:
        raise WeightsError(path, f"damaged weights: NaN or infinite values in {', '.join(broken)}")
    return {
        layer: {name: np.asarray(flat[layer][name]) for name in shapes} for layer, shapes in expected.items()
    }


# ----------------------------------------------------------------------------------------------------
# Finding and downloading


def keras_cache_dir() -> Path:
    """Where Keras caches downloaded application weights: ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def _project_weights_dir() -> Path:
    # A source checkout's weights/ folder, two levels above src/filterviz/.
    return Path(__file__).resolve().parents[2] / "weights"


def weights_search_path() -> list[Path]:
    """The places :func:`load_weights` looks for the file, in order (the environment variable first)."""
    places = []
    if os.environ.get(WEIGHTS_ENV):
        places.append(Path(os.environ[WEIGHTS_ENV]).expanduser())
    places += [
        Path("weights") / WEIGHTS_FILENAME,
        _project_weights_dir() / WEIGHTS_FILENAME,
        keras_cache_dir() / WEIGHTS_FILENAME,
    ]
    unique = []
    for place in places:
        if place.resolve() not in {known.resolve() for known in unique}:
            unique.append(place)
    return unique


def find_weights() -> Path | None:
    """The first existing file on :func:`weights_search_path`, or None.

    ``$FILTERVIZ_WEIGHTS``, when set, is the only candidate: a user who names a file means that file.
    """
    if os.environ.get(WEIGHTS_ENV):
        return Path(os.environ[WEIGHTS_ENV]).expanduser()
    for place in weights_search_path():
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
    url: str = WEIGHTS_URL,
    md5: str | None = WEIGHTS_MD5,
    filename: str = WEIGHTS_FILENAME,
    opener: Callable[..., Any] = urllib.request.urlopen,
    timeout: float = 60.0,
) -> Path:
    """Download the weights into ``directory`` (default: Keras' cache), check the md5, return the path.

    The bytes go to a temporary file beside the target and are renamed into place only once complete
    and verified, so no partial or corrupt file is ever left under the final name. Raises
    :class:`WeightsError` on a network failure, a short transfer or a checksum mismatch, saying where
    to put the file by hand.
    """
    directory = Path(directory) if directory is not None else keras_cache_dir()
    target = directory / filename
    by_hand = (
        f"without internet access, copy {WEIGHTS_FILENAME} into ./weights/ or {keras_cache_dir()}, "
        f"or set {WEIGHTS_ENV} to its path"
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
                    None, f"could not download the VGG16 weights from {url} ({reason}); {by_hand}"
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
    download: bool = True,
    url: str = WEIGHTS_URL,
    md5: str | None = WEIGHTS_MD5,
) -> Params:
    """Load the VGG16 ImageNet weights as a params pytree for :class:`filterviz.model.VGG16`.

    Args:
      path: a Keras HDF5 weights file (legacy or Keras 3 layout). When None, the first of
        ``$FILTERVIZ_WEIGHTS``, ``weights/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`` and Keras'
        cache ``~/.keras/models/`` that exists; failing all, a download from the official Keras URL.
      download: allow that download.
      url, md5: where to download from and the checksum to demand.

    Returns:
      ``{layer: {"kernel": float32[3, 3, C_in, C_out], "bias": float32[C_out]}}`` for the 13 conv layers.

    Raises:
      WeightsError: the file is missing, unreadable, truncated, foreign or not VGG16's, or the download
        failed; the message names the file and what is wrong.
    """
    if path is None:
        path = find_weights()
        if path is None:
            if not download:
                raise WeightsError(
                    None,
                    f"no VGG16 weights found (looked in {', '.join(map(str, weights_search_path()))}); "
                    f"copy {WEIGHTS_FILENAME} into one of them or set {WEIGHTS_ENV}",
                )
            path = download_weights(url=url, md5=md5)
    flat = check_weights(read_keras_h5(path), path)
    return {
        layer: {name: jnp.asarray(array) for name, array in arrays.items()} for layer, arrays in flat.items()
    }


def content_digest(params: Mapping[str, Mapping[str, Any]]) -> str:
    """sha256 over every kernel then bias as little-endian float32, in layer order.

    Identifies the tensors whatever the file's layout: the legacy and the Keras 3 file of the same
    weights give the same digest.
    """
    digest = hashlib.sha256()
    for layer in CONV_LAYERS:
        for name in ("kernel", "bias"):
            digest.update(np.ascontiguousarray(np.asarray(params[layer][name]), dtype="<f4").tobytes())
    return digest.hexdigest()
