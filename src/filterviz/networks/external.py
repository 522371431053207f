"""Your own network: a Keras 3 model or a Flax module (linen or NNX) as a
:class:`~filterviz.core.network.Network`.

Each comes back as ``(network, params)``: a network whose forward is a pure JAX function of ``params``
(so every method runs on it batched, jitted and sharded, like the built-ins) and the model's own
weights. Its layers are every named layer with a feature-map output ``[N, h, w, C]``, in the order the
model runs them; a sweep draws the convolutions' outputs by default.

Keras runs on its JAX backend through ``stateless_call`` on a model that outputs the layers asked for
(keras is an optional extra, imported only here). Flax linen modules report their submodules' outputs
through ``capture_intermediates``, NNX modules through ``nnx.capture``.

A model whose input has one channel (a grayscale classifier) is fed the mean of the RGB pixels.
"""

from __future__ import annotations

import functools
import os
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from filterviz.core.network import PREPROCESSINGS, Layer, Network, Params
from filterviz.errors import FilterVizError, SettingError, WeightsError, first_line

_PROBE = 64  # the input size the layers are found with (output sizes are computed per size later)
_VISUAL_KINDS = ("Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Conv", "ConvTranspose", "Conv2DTranspose")


def _check_preprocessing(preprocessing: str) -> str:
    if preprocessing not in PREPROCESSINGS:
        raise SettingError(
            f"unknown preprocessing {preprocessing!r}; choose one of {', '.join(PREPROCESSINGS)}"
        )
    return preprocessing


def _check_channels(channels: object) -> int:
    # Pictures are RGB; a grayscale model is fed their mean. Anything else is refused before any work.
    if isinstance(channels, bool) or not isinstance(channels, int) or channels not in (1, 3):
        raise SettingError(
            f"the model takes {channels!r} input channels; filterviz draws RGB pictures (3 channels) or "
            "their gray mean (1)"
        )
    return channels


def _to_channels(images: jax.Array, channels: int) -> jax.Array:
    # RGB pixels for a model of `channels` inputs: as they are, or their mean for a grayscale model.
    return images if channels == 3 else jnp.mean(images, axis=-1, keepdims=True)


def _guarded(forward: Callable[..., dict[str, jax.Array]]) -> Callable[..., dict[str, jax.Array]]:
    # The user's model, whose own errors (a Dense that wants one size, an assert on the shape) become
    # one typed line naming the input it failed on. Its traceback stays chained for whoever debugs it.
    @functools.wraps(forward)
    def guarded(params: Params, images: jax.Array, names: tuple[str, ...], redirect_relu: bool) -> dict:
        try:
            return forward(params, images, names, redirect_relu)
        except FilterVizError:
            raise
        except Exception as error:  # any kind: it is the model's own code that raised
            raise SettingError(
                f"the model fails on images of shape {list(images.shape)} ({first_line(error)})"
            ) from error

    return guarded


def _output_sizes(
    forward: Callable[..., dict[str, jax.Array]], params: Params, names: tuple[str, ...]
) -> Callable[[str, int, int], tuple[int, int]]:
    failures: dict[tuple[str, int, int], str] = {}

    def shapes_of(wanted: tuple[str, ...], height: int, width: int) -> dict[str, tuple[int, ...]]:
        probe = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
        try:
            out = jax.eval_shape(lambda images: forward(params, images, wanted, False), probe)
        except SettingError as error:  # the model fails at this size (see _guarded): no output there
            failures.update({(name, height, width): first_line(error.__cause__ or error) for name in wanted})
            return {}
        return {name: tuple(value.shape) for name, value in out.items()}

    @functools.cache
    def shapes(height: int, width: int) -> dict[str, tuple[int, ...]]:
        found = shapes_of(names, height, width)
        works, fails = 0, len(names)  # a layer failed them all: find the longest prefix that runs
        while not found and works + 1 < fails:
            middle = (works + fails) // 2
            if shapes_of(names[:middle], height, width):
                works = middle
            else:
                fails = middle
        return found or (shapes_of(names[:works], height, width) if works else {})

    def output_size(layer: str, height: int, width: int) -> tuple[int, int]:
        shape = shapes(height, width).get(layer)
        if shape is None:
            reason = failures.get((layer, height, width), "the model computes no such layer")
            raise SettingError(f"{layer} has no output for a {height}x{width} input ({reason})")
        return int(shape[1]), int(shape[2])

    return output_size


# ----------------------------------------------------------------------------------------------------
# Keras


def _keras() -> Any:
    # filterviz runs Keras on the JAX backend; choose it if Keras is not yet imported.
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except ImportError:
        raise SettingError(
            "a Keras model needs keras: pip install -e '.[keras]' in filterviz's clone"
        ) from None
    if keras.backend.backend() != "jax":
        raise SettingError(
            f"Keras runs on {keras.backend.backend()}; filterviz needs KERAS_BACKEND=jax, set before "
            "keras is imported"
        )
    return keras


def from_keras(
    model: Any, *, preprocessing: str = "raw", name: str | None = None
) -> tuple[Network, dict[str, jax.Array]]:
    """A Keras 3 model (an object, or the path of a ``.keras`` file) as ``(network, params)``.

    Args:
      model: a functional or sequential ``keras.Model`` on the JAX backend, or a ``.keras`` file.
      preprocessing: what the model is fed from 0-255 RGB pixels (see
        :data:`filterviz.core.network.PREPROCESSINGS`); ``"raw"`` gives the pixels as they are.
      name: the network's name (default: the model's).

    Returns:
      ``(network, params)``: ``params`` maps each of the model's variables by path to its value.

    >>> import os; os.environ.setdefault("KERAS_BACKEND", "jax")  # doctest: +SKIP
    >>> network, params = filterviz.from_keras("my_classifier.keras")  # doctest: +SKIP
    >>> filterviz.render(params, filterviz.channel("conv2d_1", range(8)), network=network)  # doctest: +SKIP
    """
    keras = _keras()
    _check_preprocessing(preprocessing)
    model = _keras_model(keras, model)
    channels = _check_channels(model.inputs[0].shape[-1])
    layers = _keras_layers(keras, model)
    variables = {variable.path: variable for variable in model.variables}
    params = {path: jnp.asarray(variable.value) for path, variable in variables.items()}

    @functools.cache
    def submodel(names: tuple[str, ...]) -> Any:
        return keras.Model(model.inputs, [model.get_layer(n).output for n in names])

    def forward(params: Params, images: jax.Array, names: tuple[str, ...], redirect_relu: bool) -> dict:
        # redirect_relu has no hook inside Keras layers: the values are the model's own either way.
        part = submodel(names)
        trainable = [params[variable.path] for variable in part.trainable_variables]
        frozen = [params[variable.path] for variable in part.non_trainable_variables]
        outputs, _ = part.stateless_call(trainable, frozen, _to_channels(images, channels), training=False)
        if not isinstance(outputs, list | tuple):
            outputs = [outputs]
        return dict(zip(names, outputs, strict=True))

    return imported_network(name or model.name, layers, forward, params, preprocessing), params


def _keras_model(keras: Any, model: Any) -> Any:
    """``model``, or the model a ``.keras`` file holds, checked to be built with one image input."""
    if isinstance(model, str | os.PathLike):
        path = Path(model)
        if not path.is_file():
            raise WeightsError(path, "no such file" if not path.exists() else "is not a regular file")
        try:
            model = keras.saving.load_model(path)
        except Exception as error:  # Keras raises many kinds for a file it cannot read
            raise WeightsError(path, f"not a Keras model Keras can load ({first_line(error)})") from None
    if not isinstance(model, keras.Model):
        raise SettingError(f"from_keras takes a keras.Model or a .keras file, got {type(model).__name__}")
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs or len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise SettingError("the model must be built, with one image input [N, H, W, C] (channels last)")
    if inputs[0].shape[-1] is None:  # (N, 3, H, W) has no fixed last axis: channels first
        raise SettingError(
            f"the model's input is {tuple(inputs[0].shape)}, channels first; filterviz feeds images "
            "[N, H, W, C] (channels last)"
        )
    return model


def _keras_layers(keras: Any, model: Any) -> list[Layer]:
    """The model's layers with a feature map ``[N, h, w, C]``, in order; the convolutions (or, where it
    has none, all of them) are the ones a sweep draws."""
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue  # a layer used more than once, or not in the graph
        if len(shape) == 4 and shape[-1] is not None:
            layers.append(Layer(layer.name, type(layer).__name__, int(shape[-1])))
    if not layers:
        raise SettingError("the model has no layer with a feature map [N, h, w, C] to draw")
    kinds = {layer.kind for layer in layers}
    visual = {
        layer.name for layer in layers if layer.kind in _VISUAL_KINDS or not kinds.intersection(_VISUAL_KINDS)
    }
    return [Layer(layer.name, layer.kind, layer.channels, layer.name in visual) for layer in layers]


# ----------------------------------------------------------------------------------------------------
# Flax


def _path_name(path: tuple[Any, ...]) -> str:
    return ".".join(str(getattr(part, "key", part)) for part in path)


def from_flax(
    module: Any,
    variables: Mapping[str, Any] | None = None,
    *,
    channels: int = 3,
    preprocessing: str = "raw",
    name: str | None = None,
) -> tuple[Network, Any]:
    """A Flax module as ``(network, params)``: a linen module with its ``variables``, or an NNX module.

    Its layers are the submodules whose outputs are feature maps ``[N, h, w, C]``, named by their path
    (``"conv1"``, ``"blocks.0.conv"``), in the order the module calls them.

    Args:
      module: a ``flax.linen.Module`` (give ``variables``) or a ``flax.nnx.Module`` (its state is its
        params).
      variables: a linen module's variables (``{"params": ..., "batch_stats": ...}``).
      channels: the module's input channels (3 for RGB, 1 for a grayscale model).
      preprocessing: what the module is fed from 0-255 RGB pixels (``"raw"``: as they are).
      name: the network's name (default: the module's class name).
    """
    import flax.linen as linen
    from flax import nnx

    _check_preprocessing(preprocessing)
    probe = jnp.zeros((1, _PROBE, _PROBE, _check_channels(channels)), jnp.float32)
    if isinstance(module, linen.Module):
        if not isinstance(variables, Mapping) or not variables:
            raise SettingError(
                "a linen module needs its variables, a mapping such as {'params': ...}: "
                f"from_flax(module, variables); got {type(variables).__name__}"
            )
        return _from_linen(module, variables, channels, preprocessing, name, probe)
    if isinstance(module, nnx.Module):
        return _from_nnx(module, channels, preprocessing, name, probe)
    raise SettingError(f"from_flax takes a flax.linen or flax.nnx module, got {type(module).__name__}")


def _from_linen(
    module: Any,
    variables: Mapping[str, Any],
    channels: int,
    preprocessing: str,
    name: str | None,
    probe: jax.Array,
) -> tuple[Network, Any]:
    order: list[str] = []
    kinds: dict[str, str] = {}

    def record(submodule: Any, method: str) -> bool:
        if method == "__call__" and submodule.path:
            path = _path_name(submodule.path)
            if path not in kinds:
                order.append(path)
                kinds[path] = type(submodule).__name__
        return method == "__call__"

    def captured(params: Any, images: jax.Array, keep: Callable[..., bool]) -> dict[str, jax.Array]:
        _, state = module.apply(params, images, capture_intermediates=keep, mutable=["intermediates"])
        found = {}
        for path, value in jax.tree_util.tree_flatten_with_path(state.get("intermediates", {}))[0]:
            keys = [str(getattr(part, "key", part)) for part in path]
            if "__call__" in keys:
                found[".".join(keys[: keys.index("__call__")])] = value
        return found

    shapes = _probed(lambda images: captured(variables, images, record), probe)
    layers = _flax_layers(order, kinds, shapes)

    def forward(params: Any, images: jax.Array, names: tuple[str, ...], redirect_relu: bool) -> dict:
        outputs = captured(
            params, _to_channels(images, channels), lambda submodule, method: method == "__call__"
        )
        return {n: outputs[n] for n in names}

    network = imported_network(name or type(module).__name__, layers, forward, variables, preprocessing)
    return network, variables


def _from_nnx(
    module: Any, channels: int, preprocessing: str, name: str | None, probe: jax.Array
) -> tuple[Network, Any]:
    from flax import nnx

    # The weights are the params; anything else the module holds (PRNG streams) stays as it is.
    graphdef, state, *rest = nnx.split(module, (nnx.Param, nnx.BatchStat), ...)
    # The submodules in the order the module holds them (the order it calls them, in the usual style).
    order, kinds = [], {}
    for path, submodule in nnx.iter_graph(module):
        if isinstance(submodule, nnx.Module) and path:
            order.append(_path_name(path))
            kinds[_path_name(path)] = type(submodule).__name__

    def captured(state: Any, images: jax.Array) -> dict[str, jax.Array]:
        model = nnx.merge(graphdef, state, *rest)
        _, intermediates = nnx.capture(model, nnx.Intermediate, method_outputs=nnx.Intermediate)(images)
        found = {}
        for path, variable in nnx.to_flat_state(intermediates):
            keys = [str(getattr(part, "key", part)) for part in path]
            if keys[-1] == "__call__" and len(keys) > 1:
                read = getattr(variable, "get_value", None)  # Flax before 0.12 has .value only
                value = read() if read else getattr(variable, "value", variable)
                found[".".join(keys[:-1])] = value[0] if isinstance(value, tuple) else value
        return found

    shapes = _probed(functools.partial(captured, state), probe)
    layers = _flax_layers(order, kinds, shapes)

    def forward(params: Any, images: jax.Array, names: tuple[str, ...], redirect_relu: bool) -> dict:
        outputs = captured(params, _to_channels(images, channels))
        return {n: outputs[n] for n in names}

    network = imported_network(name or type(module).__name__, layers, forward, state, preprocessing)
    return network, state


def _probed(function: Callable[[jax.Array], Any], probe: Any) -> Any:
    # The shapes of the module's outputs on the probe images; a module that cannot run on them (other
    # input channels, variables of another module) is refused here, in one line.
    try:
        return jax.eval_shape(function, probe)
    except FilterVizError:
        raise
    except Exception as error:  # Flax, JAX and torchax raise many kinds; the user's module is at fault
        raise SettingError(
            f"the module cannot run on images of shape {list(probe.shape)}{_failing_op(error)} "
            f"({first_line(error)})"
        ) from error


def _failing_op(error: BaseException) -> str:
    # torchax runs each torch op as a function named _aten_<op>: name the deepest one in the traceback, so
    # that an op torchax cannot run is told apart from a fault of the module's own.
    found = ""
    for frame, _ in traceback.walk_tb(error.__traceback__):
        if frame.f_code.co_name.startswith("_aten_"):
            found = frame.f_code.co_name[len("_aten_") :]
    return f", in torch op {found}" if found else ""


def _flax_layers(order: list[str], kinds: dict[str, str], shapes: dict[str, Any]) -> list[Layer]:
    maps = [path for path in order if path in shapes and len(shapes[path].shape) == 4]
    if not maps:
        raise SettingError("the module has no submodule with a feature map [N, h, w, C] to draw")
    has_conv = any(kinds[path] in _VISUAL_KINDS for path in maps)
    return [
        Layer(path, kinds[path], int(shapes[path].shape[-1]), kinds[path] in _VISUAL_KINDS or not has_conv)
        for path in maps
    ]


def imported_network(
    name: str,
    layers: list[Layer],
    forward: Callable[..., dict],
    params: Any,
    preprocessing: str,
    *,
    size_hint: int | None = None,
    prepare: Callable[[Any, Any], Any] | None = None,
    channel: Callable[..., jax.Array] | None = None,
    channel_layers: frozenset[str] = frozenset(),
) -> Network:
    """The :class:`Network` of a model of one's own (Keras, Flax, PyTorch): its forward guarded, so that
    the model's own errors are one typed line, and its output sizes found by tracing that forward.
    ``prepare`` makes its params ready for a loop of steps (:meth:`Network.prepared`), and ``channel`` is
    a fast path for one channel of ``channel_layers``, where it has them."""
    names, guarded = tuple(layer.name for layer in layers), _guarded(forward)
    return Network(
        name=name,
        layers=tuple(layers),
        forward=guarded,
        output_size=_output_sizes(guarded, params, names),
        preprocessing=preprocessing,
        parameter_shapes=None,
        size_hint=size_hint,
        prepare=prepare,
        channel=channel,
        channel_layers=channel_layers,
    )
