"""filterviz: see what the filters of VGG16 respond to, by batched gradient ascent in JAX.

>>> import filterviz  # doctest: +SKIP
>>> params = filterviz.load_weights()  # doctest: +SKIP
>>> start = filterviz.random_image(jax.random.key(0))  # doctest: +SKIP
>>> images = filterviz.ascend(params, "block4_conv1", range(20), start)  # doctest: +SKIP
>>> pictures = filterviz.as_image(images)  # doctest: +SKIP
"""

from filterviz.ascent import (
    PRECISIONS,
    activations,
    ascend,
    ascend_and_measure,
    ascend_batch,
    ascend_one,
    default_batch_size,
    layer_image,
)
from filterviz.atlas import contact_sheet, top_filters, write_atlas
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
from filterviz.sweep import SweepResult, enable_compilation_cache, filter_mesh, read_manifest, sweep
from filterviz.weights import download_weights, find_weights, load_weights

__all__ = [
    "CONV_LAYERS",
    "LAYER_NAMES",
    "PRECISIONS",
    "VGG16",
    "FilterIndexError",
    "FilterVizError",
    "ImageError",
    "OutputError",
    "SettingError",
    "SweepError",
    "SweepResult",
    "UnknownLayerError",
    "WeightsError",
    "activations",
    "as_image",
    "ascend",
    "ascend_and_measure",
    "ascend_batch",
    "ascend_one",
    "channel_activation",
    "contact_sheet",
    "default_batch_size",
    "download_weights",
    "enable_compilation_cache",
    "filter_grid",
    "filter_mesh",
    "find_weights",
    "forward",
    "init_params",
    "layer_image",
    "layer_spec",
    "load_image",
    "load_weights",
    "parameter_count",
    "random_image",
    "read_manifest",
    "save_figure",
    "save_png",
    "show_filters",
    "summary",
    "sweep",
    "top_filters",
    "write_atlas",
]
