"""A PyTorch ``nn.Module`` as a :class:`~filterviz.core.network.Network`, through torchax.

torchax runs the module's own ``forward`` on JAX arrays: every torch operation becomes a JAX operation, so
the module is a pure JAX function of its parameters and buffers and runs in filterviz's one compiled
engine like the built-ins. Nothing of the module is rewritten; its submodules' outputs are read with
forward hooks while JAX traces it, and the trace stops after the deepest layer asked for, so a picture of
an early layer compiles and runs only the layers up to it.

Conventions:
- layers are the module's own names, as ``named_modules()`` gives them (``"layer3.5"``, ``"features.4"``);
  a module called several times in one forward (torchvision's shared ``relu``) gives its last output;
- images go in ``[N, H, W, 3]`` as everywhere in filterviz and are fed NCHW; feature maps come out
  ``[N, h, w, C]`` whichever layout the module computes them in (told apart by which axes follow the
  input's size);
- token layers ``[N, T, C]`` (vision transformers) come out as the grid of their patch tokens,
  ``[N, H/p, W/p, C]``; the class token (and any other prefix token: timm's ``num_prefix_tokens``) is
  left out of the map;
- the module is put in eval mode: batch norm uses its running statistics, dropout is off.

torch, torchvision and torchax are an optional extra (``pip install -e '.[torch]'`` in a clone), imported only
here; torchax supports a narrow range of torch versions, checked before use.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from filterviz.core.network import Layer, Network, Params
from filterviz.errors import SettingError, first_line
from filterviz.networks.external import (
    _check_channels,
    _check_preprocessing,
    _probed,
    _to_channels,
    imported_network,
)
from filterviz.networks.torch_channel import one_channel
from filterviz.networks.torch_ops import (
    channels_last_environment,
    channels_last_kernels,
    channels_last_shadows,
    elementwise,
    prepare,
)

TORCH_VERSIONS = ((2, 11), (2, 12))
"""The torch releases (major, minor) torchax 0.0.13 is tested with here: 2.11.x and 2.12.x."""
EXTRA = "pip install -e '.[torch]' in filterviz's clone (torch 2.11-2.12, its torchvision, torchax 0.0.13)"

_PROBE = 224  # torchvision's and timm's input size: the size a fixed-size model (ViT) is probed at
_VISUAL_KINDS = ("Conv2d", "Conv2dNormActivation", "Conv2dSame")
_MOST_PREFIX_TOKENS = 8  # class token plus registers; more would not be a prefix of a patch grid


def torch_modules() -> tuple[Any, Any]:
    """``(torch, torchax)``, imported; :class:`SettingError` naming the extra to install when either is
    missing or when the installed torch is outside the range torchax supports."""
    try:
        import torch
    except ImportError:
        raise SettingError(f"a PyTorch model needs torch and torchax: {EXTRA}") from None
    found = tuple(int(part) for part in re.findall(r"\d+", torch.__version__)[:2])
    if not TORCH_VERSIONS[0] <= found <= TORCH_VERSIONS[1]:
        raise SettingError(f"torch {torch.__version__} is outside the range torchax supports: {EXTRA}")
    try:
        import torchax
    except ImportError:
        raise SettingError(f"a PyTorch model needs torchax: {EXTRA}") from None
    except Exception as error:  # torchax fails in many ways on a torch it does not know
        raise SettingError(
            f"torchax cannot run with torch {torch.__version__} ({first_line(error)}): {EXTRA}"
        ) from None
    return torch, torchax


class _Enough(Exception):
    """Raised by a hook once the deepest layer asked for is captured: the rest of the forward is skipped."""


def from_torch(
    module: Any,
    layers: Iterable[str] | None = None,
    *,
    preprocessing: str = "torch",
    channels: int = 3,
    name: str | None = None,
) -> tuple[Network, dict[str, jax.Array]]:
    """A PyTorch module as ``(network, params)``.

    Args:
      module: a ``torch.nn.Module`` taking images ``[N, C, H, W]`` (put in eval mode here).
      layers: the submodules to offer, by their ``named_modules()`` names (default: every submodule whose
        output is a feature map or a grid of tokens).
      preprocessing: what the module is fed from 0-255 RGB pixels (default ``"torch"``: 0-1, standardised
        by torchvision's ImageNet mean and std; see :data:`filterviz.core.network.PREPROCESSINGS`).
      channels: the module's input channels (3, or 1 for a grayscale model, fed the pixels' mean).
      name: the network's name (default: the module's class name).

    Returns:
      ``(network, params)``: ``params`` maps each parameter and buffer name of ``module.state_dict()`` to
      its value as a JAX array.

    >>> import torchvision  # doctest: +SKIP
    >>> resnet = torchvision.models.resnet50(weights="DEFAULT")  # doctest: +SKIP
    >>> network, params = filterviz.from_torch(resnet)  # doctest: +SKIP
    >>> filterviz.render(params, filterviz.channel("layer3.5", range(8)), network=network)  # doctest: +SKIP
    """
    torch, torchax = torch_modules()
    if not isinstance(module, torch.nn.Module):
        raise SettingError(f"from_torch takes a torch.nn.Module, got {type(module).__name__}")
    _check_preprocessing(preprocessing)
    channels = _check_channels(channels)
    module.eval()
    env = channels_last_environment(torch, torchax)
    submodules = {path: sub for path, sub in module.named_modules() if path}
    wanted = _chosen(layers, submodules)
    params = _params(module, env)
    call = _Traced(torch, module, submodules, env)
    found, layouts, prefixes = _layers(call, params, channels, wanted, submodules, _prefix_tokens(module))

    def forward(params: Params, images: jax.Array, names: tuple[str, ...], redirect_relu: bool) -> dict:
        height, width = images.shape[1:3]
        nchw = jnp.transpose(_to_channels(images, channels), (0, 3, 1, 2))
        with channels_last_kernels(params) as plain:  # prepared: kernels transposed before the loop
            outputs = call(plain, nchw, names, redirect_relu)
        return {n: _as_map(outputs[n], layouts[n], height, width, prefixes.get(n, 0)) for n in names}

    def channel(
        params: Params, images: jax.Array, layer: str, index: jax.Array | int, redirect_relu: bool = False
    ) -> jax.Array:
        nchw = jnp.transpose(_to_channels(images, channels), (0, 3, 1, 2))
        height, width = images.shape[1:3]
        whole = functools.partial(_as_map, layout="nchw", height=height, width=width, prefix=0)
        return one_channel(call, params, nchw, layer, index, redirect_relu, whole)

    network = imported_network(
        name or type(module).__name__,
        found,
        forward,
        params,
        preprocessing,
        size_hint=_PROBE,
        prepare=prepare,
        channel=channel,
        channel_layers=frozenset(name for name in layouts if layouts[name] == "nchw"),
    )
    return network, params


def _layers(
    call: _Traced,
    params: Params,
    channels: int,
    wanted: list[str],
    submodules: Mapping[str, Any],
    prefix: int,
) -> tuple[list[Layer], dict[str, str], dict[str, int]]:
    """The drawable layers among ``wanted``, each one's layout and each token layer's prefix tokens, from
    one probe of the module. Each layer is judged on its own: one whose output is no map (a pooled
    vector, tokens that form no patch grid) is left out and the others stay."""
    shapes = _probe(call, params, channels, wanted)
    found, layouts, prefixes = [], {}, {}
    for path in wanted:
        shape = shapes.get(path)
        layout = _layout(shape)
        if shape is None or layout is None:
            continue
        if layout == "tokens":
            try:
                prefixes[path] = _token_grid(shape[1], _PROBE, _PROBE, prefix)[2]
            except SettingError:
                continue
        layouts[path] = layout
        kind = type(submodules[path]).__name__
        visual = kind in _VISUAL_KINDS or (layout != "nchw" and _is_block(submodules[path]))
        found.append(Layer(path, kind, int(shape[-1 if layout != "nchw" else 1]), visual))
    if not found:
        raise SettingError("the module has no submodule with a feature map [N, C, h, w] or tokens [N, T, C]")
    return found, layouts, prefixes


def _prefix_tokens(module: Any) -> int:
    # timm's count of class and register tokens before the patches; -1 (found per layer) where the
    # module states none, or states something that is not a small whole number.
    stated = getattr(module, "num_prefix_tokens", None)
    if isinstance(stated, int) and not isinstance(stated, bool) and 0 <= stated <= _MOST_PREFIX_TOKENS:
        return stated
    return -1


def _chosen(layers: Iterable[str] | None, submodules: Mapping[str, Any]) -> list[str]:
    if layers is None:
        return list(submodules)
    chosen = [layers] if isinstance(layers, str) else list(layers)
    unknown = [path for path in chosen if path not in submodules]
    if unknown or not chosen:
        sample = ", ".join(list(submodules)[:8])
        raise SettingError(
            f"the module has no submodule {unknown[0] if unknown else ''!r}; its names: {sample}, ..."
        )
    return chosen


def _params(module: Any, env: Any) -> dict[str, jax.Array]:
    # Parameters and buffers by their state_dict names; a parameter shared by two names is kept once
    # per name, so a state_dict loads into them as torch would.
    state = {**dict(module.named_parameters(remove_duplicate=False)), **dict(module.named_buffers())}
    empty = [path for path, tensor in state.items() if tensor.is_meta]
    if empty:
        raise SettingError(
            f"the module's {empty[0]} (and {len(empty) - 1} more) holds no values: it is on the meta "
            "device; load its weights (load_state_dict(..., assign=True)) before drawing it"
        )
    return {path: jnp.asarray(env.t2j_copy(tensor.detach())) for path, tensor in state.items()}


class _Traced:
    """``(params, images [N, C, H, W], names, redirect_relu) -> {name: output as JAX}``: the module's
    forward under torchax, its submodules' last outputs caught by hooks, stopped once each has run as
    often as it runs in a whole forward at that input size (a submodule may run a number of times that
    depends on the size: counted once per size, by a shape-only forward)."""

    def __init__(self, torch: Any, module: Any, submodules: Mapping[str, Any], env: Any) -> None:
        self.torch, self.module, self.submodules, self.env = torch, module, submodules, env
        self.calls: dict[tuple, dict[str, int]] = {}  # (input shape, names) -> runs of each in a forward
        self.paths = {id(sub): path for path, sub in submodules.items()}  # a submodule's path

    def __call__(
        self,
        params: Params,
        images: jax.Array,
        names: Iterable[str],
        redirect_relu: bool,
        watch: Callable[[], list[Any]] | None = None,
    ) -> dict:
        names = tuple(names)
        key = (tuple(images.shape), names)
        if key not in self.calls:
            counted: dict[str, int] = {}
            shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), (params, images))
            jax.eval_shape(lambda p, x: self._run(p, x, names, False, None, counted), *shapes)
            self.calls[key] = counted
        return self._run(params, images, names, redirect_relu, self.calls[key], {}, watch)

    def _run(
        self,
        params: Params,
        images: jax.Array,
        names: tuple[str, ...],
        redirect_relu: bool,
        stop: dict[str, int] | None,
        counted: dict[str, int],
        watch: Callable[[], list[Any]] | None = None,
    ) -> dict:
        """The forward, its ``names``' outputs caught; ``watch`` registers more hooks, and returns their
        handles, for this run only."""
        torch, env = self.torch, self.env
        outputs: dict[str, Any] = {}
        counted.update(dict.fromkeys(names, 0))

        def catch(path: str) -> Callable[..., None]:
            def hook(_module: Any, _inputs: Any, output: Any) -> None:
                # Read now: an in-place operation later (ReLU(inplace=True)) would change the tensor.
                outputs[path] = env.t2j_iso(output) if isinstance(output, torch.Tensor) else None
                counted[path] += 1
                if stop is not None and all(counted[p] >= max(stop.get(p, 1), 1) for p in names):
                    raise _Enough

            return hook

        handles = [self.submodules[path].register_forward_hook(catch(path)) for path in names]
        handles += watch() if watch is not None else []
        relus = _redirect(torch, self.module, env) if redirect_relu else []
        try:
            with env, channels_last_shadows():
                torch.func.functional_call(self.module, env.j2t_iso(dict(params)), (env.j2t_iso(images),))
        except _Enough:
            pass
        finally:
            for handle in handles:
                handle.remove()
            for relu in relus:
                del relu.forward
        return outputs


def _redirect(torch: Any, module: Any, env: Any) -> list[Any]:
    # Lucid's redirected ReLU for the module's nn.ReLU submodules, for this trace only: their forward is
    # replaced by filterviz's (values unchanged, gradients redirected). F.relu calls are left as they are.
    from filterviz.core.relu import redirected_relu

    relus = [sub for sub in module.modules() if isinstance(sub, torch.nn.ReLU)]
    for relu in relus:
        relu.forward = lambda x: env.j2t_iso(elementwise(redirected_relu, env.t2j_iso(x)))
    return relus


def _probe(call: _Traced, params: Params, channels: int, names: list[str]) -> dict[str, tuple[int, ...]]:
    """The shapes of the named submodules' outputs for one square image; :class:`SettingError` if the
    module cannot run on it."""

    def shapes(channels: int) -> Any:
        probe = jax.ShapeDtypeStruct((1, channels, _PROBE, _PROBE), jnp.float32)
        return _probed(lambda images: call(params, images, names, False), probe)

    try:
        outputs = shapes(channels)
    except SettingError as error:
        if channels == 3 and _runs(shapes, 1):
            hint = "it takes 1 input channel, so pass channels=1 (--channels 1)"
            raise SettingError(f"{error}: {hint}") from None
        raise
    return {path: tuple(value.shape) for path, value in outputs.items() if value is not None}


def _runs(shapes: Callable[[int], Any], channels: int) -> bool:
    # Whether the module runs on images of `channels` channels: the grayscale model told apart.
    try:
        shapes(channels)
    except SettingError:
        return False
    return True


def _layout(shape: tuple[int, ...] | None) -> str | None:
    """``"nchw"``, ``"nhwc"`` or ``"tokens"`` for a submodule's output shape on the square probe, or None
    if it is neither a feature map nor tokens. The probe is square, so a map's two spatial axes are
    equal: ``[N, C, h, h]`` is channels-first, ``[N, h, h, C]`` channels-last (Swin's stages); where all
    three are equal, torch's own NCHW."""
    if shape is None or len(shape) not in (3, 4) or min(shape[1:]) < 1:
        return None
    if len(shape) == 3:
        return "tokens"
    if shape[2] == shape[3]:
        return "nchw"
    if shape[1] == shape[2]:
        return "nhwc"
    return None


def _as_map(output: jax.Array, layout: str, height: int, width: int, prefix: int) -> jax.Array:
    """``[N, h, w, C]`` from a submodule's output in ``layout`` for an input of ``height x width``."""
    if layout == "nchw":
        return jnp.transpose(output, (0, 2, 3, 1))
    if layout == "nhwc":
        return output
    rows, columns, skip = _token_grid(output.shape[1], height, width, prefix)
    return output[:, skip:].reshape(output.shape[0], rows, columns, output.shape[2])


def _token_grid(tokens: int, height: int, width: int, prefix: int) -> tuple[int, int, int]:
    """``(rows, columns, prefix)``: the patch grid of ``tokens`` for an input of ``height x width``, after
    ``prefix`` leading tokens (the class token), or else after the fewest that leave a grid of the
    input's shape (a patch embedding's output has no class token yet)."""
    for skip in ([prefix] if prefix >= 0 else []) + list(range(_MOST_PREFIX_TOKENS + 1)):
        patches = tokens - skip
        rows = round(math.sqrt(patches * height / width)) if patches > 0 else 0
        if rows and patches % rows == 0:
            columns = patches // rows
            if abs(rows * width - columns * height) <= max(height, width) // max(rows, columns):
                return rows, columns, skip
    raise SettingError(f"{tokens} tokens form no patch grid for a {height}x{width} input")


def _is_block(submodule: Any) -> bool:
    # A token or channels-last layer (a ViT's, a Swin's) worth drawing by default is a block of several
    # parts (an encoder layer, its MLP, a stage), not one of its norms or linear maps.
    return sum(1 for _ in submodule.children()) > 1
