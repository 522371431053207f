"""filterviz: see what the filters of VGG16 respond to, by batched gradient ascent in JAX.

>>> import filterviz  # doctest: +SKIP
>>> params = filterviz.load_weights()  # doctest: +SKIP
>>> start = filterviz.random_image(jax.random.key(0))  # doctest: +SKIP
>>> images = filterviz.ascend(params, "block4_conv1", range(20), start)  # doctest: +SKIP
>>> pictures = filterviz.as_image(images)  # doctest: +SKIP
>>> lucid = filterviz.render(params, filterviz.channel("block4_conv1", range(20)))  # doctest: +SKIP
"""

from filterviz.ascent import (
    PRECISIONS,
    achieved,
    activations,
    ascend,
    ascend_and_measure,
    ascend_batch,
    ascend_one,
    default_batch_size,
    layer_image,
)
from filterviz.atlas import Atlas, contact_sheet, top_filters, write_atlas
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
from filterviz.images import as_image, load_image, random_image, save_gif, save_picture
from filterviz.methods import (
    METHODS,
    Method,
    Octaves,
    Optimizer,
    Rendering,
    filter_keys,
    get_method,
    normalized_gradient,
    render,
    render_batch,
    render_filters,
)
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
from filterviz.objectives import Objective, channel, deepdream, direction, diversity, neuron
from filterviz.param import Fourier, Maco, Pixels
from filterviz.plotting import filter_grid, save_figure, show_filters
from filterviz.sweep import SweepResult, enable_compilation_cache, filter_mesh, split_cpu_into_devices, sweep
from filterviz.sweep_folder import read_manifest
from filterviz.weights import download_weights, find_weights, load_weights

__all__ = [
    "CONV_LAYERS",
    "LAYER_NAMES",
    "METHODS",
    "PRECISIONS",
    "VGG16",
    "Atlas",
    "FilterIndexError",
    "FilterVizError",
    "Fourier",
    "ImageError",
    "Maco",
    "Method",
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
    "ascend_and_measure",
    "ascend_batch",
    "ascend_one",
    "channel",
    "channel_activation",
    "contact_sheet",
    "deepdream",
    "default_batch_size",
    "direction",
    "diversity",
    "download_weights",
    "enable_compilation_cache",
    "filter_grid",
    "filter_keys",
    "filter_mesh",
    "find_weights",
    "forward",
    "get_method",
    "init_params",
    "layer_image",
    "layer_spec",
    "load_image",
    "load_weights",
    "neuron",
    "normalized_gradient",
    "parameter_count",
    "random_image",
    "read_manifest",
    "render",
    "render_batch",
    "render_filters",
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
