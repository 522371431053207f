"""filterviz: see what the filters of a convolutional network respond to, by gradient ascent in JAX.

The package's folders show its shape: ``core/`` is the pure numerical core (network type, objectives,
parameterizations, transforms, methods, the engine), ``networks/`` the built-in networks, imported
models and weights, ``draw/`` the functions users call on arrays, ``io/`` photos in and files out,
``jobs/`` what every long job's folder shares, and above them one folder per feature: ``sweeps/`` (every
filter of a network into a folder, with its atlas page), ``dataset_examples/``, ``activation_atlases/``,
``concept_atlases/`` (:func:`filterviz.concepts`); ``cli/`` the command line. The names below are the
public API; everything else is reached through its module (``filterviz.core.methods.Fourier``,
``filterviz.core.engine.render_one``).

>>> import filterviz  # doctest: +SKIP
>>> params = filterviz.load_weights()  # VGG16's ImageNet weights  # doctest: +SKIP
>>> start = filterviz.random_image(jax.random.key(0))  # doctest: +SKIP
>>> images = filterviz.ascend(params, "block4_conv1", range(20), start)  # doctest: +SKIP
>>> lucid = filterviz.render(params, filterviz.channel("block4_conv1", range(20)))  # doctest: +SKIP
>>> network, params = filterviz.from_keras("my_model.keras")  # your own network  # doctest: +SKIP
>>> network, params = filterviz.from_torch(torchvision.models.resnet50())  # or PyTorch's  # doctest: +SKIP
"""

import warnings
from typing import Any

from filterviz.activation_atlases.atlas import activation_atlas
from filterviz.concept_atlases.concepts import concepts
from filterviz.core.methods import get_method
from filterviz.core.network import Network
from filterviz.core.objectives import channel, deepdream, direction, diversity, neuron, objective
from filterviz.core.pictures import as_image, random_image
from filterviz.dataset_examples.examples import examples
from filterviz.draw.notebook import achieved, activations, ascend, layer_image, show_filters
from filterviz.draw.rendering import render
from filterviz.errors import (
    FilterIndexError,
    FilterVizError,
    ImageError,
    OutputError,
    SettingError,
    SweepError,
    UnknownLayerError,
    WeightsError,
)
from filterviz.io.files import save_gif as _save_gif
from filterviz.io.files import save_picture
from filterviz.io.photos import load_image
from filterviz.io.plots import filter_grid, save_figure
from filterviz.networks import get_network as network
from filterviz.networks.external import from_flax, from_keras
from filterviz.networks.pytorch import from_torch
from filterviz.networks.weights import load_weights
from filterviz.runtime import VERSION, enable_compilation_cache
from filterviz.sweeps.atlas import top_filters, write_atlas
from filterviz.sweeps.manifest import read_manifest as _read_manifest
from filterviz.sweeps.sweep import sweep

__version__ = VERSION


def _summary(height: int | None = None, width: int | None = None, *, model: str | Network = "vgg16") -> str:
    # The retired top-level summary, as it was: the Keras-style table of a network's layers.
    return network(model).summary(height, width)


_MOVED: dict[str, tuple[Any, str]] = {
    "summary": (_summary, "filterviz.network(name).summary(height, width)"),
    "read_manifest": (_read_manifest, "filterviz.top_filters(out)"),
    "save_gif": (_save_gif, "filterviz.save_picture(frames, path, frame_ms=...)"),
}
"""Names that left the top level, still reached there for one release with a DeprecationWarning."""


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module 'filterviz' has no attribute {name!r}")
    value, instead = _MOVED[name]
    warnings.warn(f"filterviz.{name} is deprecated; use {instead}", DeprecationWarning, stacklevel=2)
    return value


__all__ = [
    # Errors
    "FilterIndexError",
    "FilterVizError",
    "ImageError",
    # Networks and weights
    "Network",
    "OutputError",
    "SettingError",
    "SweepError",
    "UnknownLayerError",
    "WeightsError",
    # Drawing
    "achieved",
    "activation_atlas",
    "activations",
    # Pictures and files
    "as_image",
    "ascend",
    # Objectives
    "channel",
    "concepts",
    "deepdream",
    "direction",
    "diversity",
    "enable_compilation_cache",
    # Work at volume
    "examples",
    "filter_grid",
    "from_flax",
    "from_keras",
    "from_torch",
    "get_method",
    "layer_image",
    "load_image",
    "load_weights",
    "network",
    "neuron",
    "objective",
    "random_image",
    "render",
    "save_figure",
    "save_picture",
    "show_filters",
    "sweep",
    "top_filters",
    "write_atlas",
]
