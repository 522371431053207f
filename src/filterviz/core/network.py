"""A network as a value: its layers, a pure forward pass, its input convention and its weights' source.

Everything downstream (objectives, methods, sweeps, the atlas, the command line, the memory model) takes
a :class:`Network` and asks it; nothing reads one network's layer table directly. This module knows no
network by name: the built-in ones are values in :data:`filterviz.networks.BUILTIN`, and a user's own
comes from :func:`filterviz.from_keras` or :func:`filterviz.from_flax`.

Shapes: images are ``float32[N, H, W, 3]`` already preprocessed for the network (see
:data:`PREPROCESSINGS`); :meth:`Network.apply` returns ``{layer: float32[N, h, w, C]}`` for the layers
asked for and computes nothing past the deepest of them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from filterviz.errors import SettingError, UnknownLayerError, printable

LARGEST_SIDE = 8192
"""The largest input side :meth:`Network.minimum_size` tries: a layer with no output up to it has none."""

Params = Mapping[str, Any]
"""A network's parameters: a pytree of arrays (for the built-ins, ``{layer: {name: array}}``)."""

PREPROCESSINGS: tuple[str, ...] = ("raw", "caffe", "torch", "tf")
"""Input conventions: ``raw`` 0-255 RGB as is (the notebook feeds VGG16 so), ``caffe`` BGR minus the
ImageNet mean (Keras' VGG and ResNet), ``torch`` 0-1 RGB standardised by the ImageNet mean and std,
``tf`` RGB scaled to [-1, 1] (Keras' MobileNet, Inception)."""


@dataclasses.dataclass(frozen=True)
class Layer:
    """One named layer: ``kind`` (``"conv"``, ``"pool"``, ``"block"`` ...), its output ``channels``, and
    whether it has filters worth drawing (``visual``: a sweep's default plan holds those)."""

    name: str
    kind: str
    channels: int
    visual: bool = True


@dataclasses.dataclass(frozen=True)
class WeightsSource:
    """Where a network's published weights come from: the file's name, its official URL and the md5 its
    framework checks (Keras' ``file_hash``)."""

    file_name: str
    url: str
    md5: str


@dataclasses.dataclass(frozen=True, eq=False)
class Network:
    """A network: hashable by identity, so it is a static argument of every compiled program.

    Attributes:
      name: ``"vgg16"``, ``"resnet50"``, or a user's model's name.
      layers: every named layer in network order.
      forward: ``(params, images, names, redirect_relu) -> {name: activations}`` for ``names``, pure.
      output_size: ``(layer, height, width) -> (h, w)`` of that layer's output for an input of that size
        (below 1 where the input is too small; :class:`SettingError` where the model cannot run at it).
      preprocessing: the input convention the weights were trained with (:data:`PREPROCESSINGS`).
      parameter_shapes: ``{group: {name: shape}}`` of the parameters, or None where they are not known.
      weights: where the published weights come from, or None.
      channel: a fast path for one channel, ``(params, images, layer, index, redirect_relu) -> [N, h, w]``,
        for the layers ``channel_layers`` names (every channel objective on those layers uses it), or None.
      prepare: params made ready for many steps in a compute type (e.g. kernels flipped once).
      init: random parameters from a PRNG key (for tests and shapes), or None.
      size_hint: a side the model is known to run at (the one it was probed at), which
        :meth:`minimum_size` tries among the powers of two: a model of one input size (a ViT) is found.
    """

    name: str
    layers: tuple[Layer, ...]
    forward: Callable[..., dict[str, jax.Array]]
    output_size: Callable[[str, int, int], tuple[int, int]]
    preprocessing: str = "raw"
    parameter_shapes: Mapping[str, Mapping[str, tuple[int, ...]]] | None = None
    weights: WeightsSource | None = None
    channel: Callable[..., jax.Array] | None = None
    channel_layers: frozenset[str] = frozenset()
    prepare: Callable[[Params, Any], Params] | None = None
    init: Callable[[jax.Array], Params] | None = None
    size_hint: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {layer.name: layer for layer in self.layers})
        object.__setattr__(self, "_order", {layer.name: index for index, layer in enumerate(self.layers)})

    def __repr__(self) -> str:
        return f"Network({self.name!r}, {len(self.layers)} layers)"

    # Layers ---------------------------------------------------------------------------------------
    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    @property
    def visual_layers(self) -> tuple[str, ...]:
        """The layers a sweep draws by default (for VGG16 its 13 conv layers)."""
        return tuple(layer.name for layer in self.layers if layer.visual)

    def layer(self, name: object, *, visual: bool = False) -> Layer:
        """The layer called ``name``; :class:`UnknownLayerError` listing the valid names otherwise."""
        found = self._by_name.get(name) if isinstance(name, str) else None  # type: ignore[attr-defined]
        if found is None or (visual and not found.visual):
            valid = self.visual_layers if visual else self.layer_names
            raise UnknownLayerError(name, valid, self.name)
        return found

    def order(self, name: str) -> int:
        """Position of a layer in the network (for sorting)."""
        return self._order[self.layer(name).name]  # type: ignore[attr-defined]

    def sorted(self, names: Iterable[str]) -> tuple[str, ...]:
        """``names`` (unique) in network order."""
        return tuple(sorted(set(names), key=self.order))

    # Sizes and memory -----------------------------------------------------------------------------
    def minimum_size(self, layer: str) -> int:
        """The smallest height and width for which ``layer`` has an output, searched up to
        :data:`LARGEST_SIDE`; :class:`SettingError` if it has none there, with the model's reason."""
        name = self.layer(layer).name
        reasons: list[str] = []

        def fits(side: int) -> bool:
            try:
                return min(self.output_size(name, side, side)) >= 1
            except SettingError as error:  # the model cannot run at this size at all
                reasons.append(str(error))
                return False

        sides = sorted({2**power for power in range(LARGEST_SIDE.bit_length())} | {self.size_hint or 1})
        low = 0
        for size in sides:
            if fits(size):
                break
            low = size
        else:
            reason = f": {reasons[-1]}" if reasons else ""
            raise SettingError(
                f"{name} of {self.name} has no output for any square input up to "
                f"{LARGEST_SIDE}x{LARGEST_SIDE}{reason}"
            )
        while low + 1 < size:  # the boundary lies between low (too small) and size (enough)
            middle = (low + size) // 2
            low, size = (low, middle) if fits(middle) else (middle, size)
        return size

    def activation_elements(self, layer: str, height: int, width: int) -> int:
        """Values one image produces up to ``layer``: the memory model that sizes chunks."""
        position = self.order(layer)
        total = height * width * 3
        for spec in self.layers[: position + 1]:
            h, w = self.output_size(spec.name, height, width)
            total += max(h, 0) * max(w, 0) * spec.channels
        return total

    # Computing ------------------------------------------------------------------------------------
    def apply(
        self, params: Params, images: jax.Array, layers: Iterable[str], *, redirect_relu: bool = False
    ) -> dict[str, jax.Array]:
        """``{layer: float32[N, h, w, C]}`` for ``layers`` from preprocessed ``images [N, H, W, 3]``."""
        names = self.sorted(self.layer(name).name for name in layers)
        return self.forward(params, images, names, redirect_relu)

    def channel_activation(
        self,
        params: Params,
        images: jax.Array,
        layer: str,
        index: jax.Array | int,
        *,
        redirect_relu: bool = False,
    ) -> jax.Array:
        """One channel of one layer, ``[N, H, W, 3] -> [N, h, w]``, the fast way where there is one."""
        if self.channel is not None and layer in self.channel_layers:
            return self.channel(params, images, layer, index, redirect_relu)
        activation = self.apply(params, images, [layer], redirect_relu=redirect_relu)[layer]
        return jnp.take(activation, index, axis=-1)

    def prepared(self, params: Params, dtype: Any) -> Params:
        """``params`` ready for a loop of steps in ``dtype`` (cast, and whatever the network hoists)."""
        if self.prepare is not None:
            return self.prepare(params, dtype)

        def cast(array: Any) -> Any:
            array = jnp.asarray(array)
            return array.astype(dtype) if jnp.issubdtype(array.dtype, jnp.floating) else array

        return jax.tree.map(cast, params)

    # Parameters -----------------------------------------------------------------------------------
    def parameter_count(self, group: str | None = None) -> int:
        """Parameters of one group (a layer's weights), or of the whole network."""
        if self.parameter_shapes is None:
            raise SettingError(f"{self.name} does not list its parameters")
        groups = [group] if group is not None else list(self.parameter_shapes)
        return sum(
            math.prod(shape) for name in groups for shape in self.parameter_shapes.get(name, {}).values()
        )

    def summary(self, height: int | None = None, width: int | None = None) -> str:
        """A Keras-style table of the layers (name, kind, output shape, parameters)."""
        if (height is None) != (width is None):
            raise SettingError("give both height and width, or neither")
        for side in (height, width):
            if side is not None and (isinstance(side, bool) or not isinstance(side, int) or side < 1):
                raise SettingError(f"a size must be a whole number of at least 1, got {side!r}")
        rows = [("input_1 (InputLayer)", (None, height, width, 3), 0)]
        for spec in self.layers:
            spatial = (
                (None, None)
                if height is None or width is None
                else self.output_size(spec.name, height, width)
            )
            count = self.parameter_count(spec.name) if self.parameter_shapes else 0
            # A model's own names may hold newlines or terminal escapes: the table shows them as text.
            rows.append((f"{printable(spec.name)} ({spec.kind})", (None, *spatial, spec.channels), count))
        width_name = max(29, max(len(row[0]) for row in rows) + 2)
        rule = "_" * (width_name + 36)
        header = f"{'Layer (type)':<{width_name}}{'Output Shape':<26}Param #"
        lines = [f'Model: "{printable(self.name)}"', rule, header]
        lines.append("=" * len(rule))
        for index, (name, shape, count) in enumerate(rows):
            lines.append(f"{name:<{width_name}}{shape!s:<26}{count}")
            lines.append("=" * len(rule) if index == len(rows) - 1 else rule)
        if self.parameter_shapes is not None:
            total = self.parameter_count()
            lines += [f"Total params: {total:,}", f"Trainable params: {total:,}", "Non-trainable params: 0"]
        lines.append(rule)
        return "\n".join(lines)


def preprocess(pixels: jax.Array, preprocessing: str) -> jax.Array:
    """Network input from ``pixels float32[..., 3]`` (0-255 RGB) by an input convention."""
    if preprocessing not in PREPROCESSINGS:
        raise SettingError(
            f"unknown preprocessing {preprocessing!r}; choose one of {', '.join(PREPROCESSINGS)}"
        )
    if preprocessing == "raw":
        return pixels
    if preprocessing == "caffe":
        return pixels[..., ::-1] - jnp.asarray(IMAGENET_MEAN_BGR, pixels.dtype)
    if preprocessing == "torch":
        mean = jnp.asarray(IMAGENET_MEAN_RGB, pixels.dtype)
        std = jnp.asarray(IMAGENET_STD_RGB, pixels.dtype)
        return (pixels / 255.0 - mean) / std
    return pixels / 127.5 - 1.0


IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
"""ImageNet's channel means on the 0-255 scale, in BGR order (Keras' caffe preprocessing)."""
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
