"""filterviz: see what the filters of a convolutional network respond to, by gradient ascent in JAX.

>>> import filterviz  # doctest: +SKIP
>>> params = filterviz.load_weights()  # VGG16's ImageNet weights  # doctest: +SKIP
>>> start = filterviz.random_image(jax.random.key(0))  # doctest: +SKIP
>>> images = filterviz.ascend(params, "block4_conv1", range(20), start)  # doctest: +SKIP
>>> lucid = filterviz.render(params, filterviz.channel("block4_conv1", range(20)))  # doctest: +SKIP
>>> network, params = filterviz.from_keras("my_model.keras")  # your own network  # doctest: +SKIP
"""

from filterviz.ascent import achieved, activations, ascend, layer_image
from filterviz.atlas import Atlas, top_filters, write_atlas
from filterviz.checks import PRECISIONS
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
from filterviz.examples import Examples, examples
from filterviz.external import from_flax, from_keras
from filterviz.images import load_image, save_gif, save_picture
from filterviz.methods import METHODS, Method, Octaves, Optimizer, get_method
from filterviz.network import Network, network
from filterviz.objectives import Objective, channel, deepdream, direction, diversity, neuron, objective
from filterviz.param import Fourier, Maco, Pixels
from filterviz.pictures import as_image, random_image
from filterviz.plotting import filter_grid, save_figure, show_filters
from filterviz.rendering import Rendering, render
from filterviz.runtime import enable_compilation_cache, split_cpu_into_devices
from filterviz.sweep import SweepResult, sweep
from filterviz.sweep_folder import read_manifest
from filterviz.weights import load_weights


def summary(height: int | None = None, width: int | None = None, *, model: str | Network = "vgg16") -> str:
    """The Keras-style table of a network's layers (VGG16's by default), as the notebook prints it.

    >>> print(summary(224, 224).splitlines()[6])
    block1_conv1 (Conv2D)        (None, 224, 224, 64)      1792
    """
    return network(model).summary(height, width)


__all__ = [
    "METHODS",
    "PRECISIONS",
    "Atlas",
    "Examples",
    "FilterIndexError",
    "FilterVizError",
    "Fourier",
    "ImageError",
    "Maco",
    "Method",
    "Network",
    "Objective",
    "Octaves",
    "Optimizer",
    "OutputError",
    "Pixels",
    "Rendering",
    "SettingError",
    "SweepError",
    "SweepResult",
    "UnknownLayerError",
    "WeightsError",
    "achieved",
    "activations",
    "as_image",
    "ascend",
    "channel",
    "deepdream",
    "direction",
    "diversity",
    "enable_compilation_cache",
    "examples",
    "filter_grid",
    "from_flax",
    "from_keras",
    "get_method",
    "layer_image",
    "load_image",
    "load_weights",
    "network",
    "neuron",
    "objective",
    "random_image",
    "read_manifest",
    "render",
    "save_figure",
    "save_gif",
    "save_picture",
    "show_filters",
    "split_cpu_into_devices",
    "summary",
    "sweep",
    "top_filters",
    "write_atlas",
]
