"""filterviz: see what the filters of VGG16 respond to, by batched gradient ascent in JAX.

>>> import filterviz  # doctest: +SKIP
>>> params = filterviz.load_weights()  # doctest: +SKIP
>>> start = filterviz.random_image(jax.random.key(0))  # doctest: +SKIP
>>> images = filterviz.ascend(params, "block4_conv1", range(20), start)  # doctest: +SKIP
>>> pictures = filterviz.as_image(images)  # doctest: +SKIP
"""

from filterviz.ascent import activations, ascend, ascend_batch, ascend_one, default_batch_size, layer_image
from filterviz.errors import (
    FilterIndexError,
    FilterVizError,
    ImageError,
    OutputError,
    UnknownLayerError,
    WeightsError,
)
from filterviz.images import as_image, load_image, random_image, save_png
from filterviz.model import (
    CONV_LAYERS,
    LAYER_NAMES,
    VGG16,
    channel_activation,
    forward,
    init_params,
    layer_spec,
    parameter_count,
    summary,
)
from filterviz.plotting import filter_grid, save_figure, show_filters
from filterviz.weights import download_weights, find_weights, load_weights

__all__ = [
    "CONV_LAYERS",
    "LAYER_NAMES",
    "VGG16",
    "FilterIndexError",
    "FilterVizError",
    "ImageError",
    "OutputError",
    "UnknownLayerError",
    "WeightsError",
    "activations",
    "as_image",
    "ascend",
    "ascend_batch",
    "ascend_one",
    "channel_activation",
    "default_batch_size",
    "download_weights",
    "filter_grid",
    "find_weights",
    "forward",
    "init_params",
    "layer_image",
    "layer_spec",
    "load_image",
    "load_weights",
    "parameter_count",
    "random_image",
    "save_figure",
    "save_png",
    "show_filters",
    "summary",
]
