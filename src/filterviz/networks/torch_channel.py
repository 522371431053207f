"""One channel of a PyTorch model's layer, the fast way where the layer is a 2-D convolution or an
activation applied right to one's output (VGG's ``features.15``, a ReLU after a convolution): only that
channel of the convolution is computed, by :func:`~filterviz.networks.layers.conv_one_channel`, as the
built-in networks do. The rest of the forward is traced as usual and dropped by XLA, nothing reading it.
Anything else (another layer kind, a grouped or dilated convolution, a derived weight) takes the channel
from the whole output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from filterviz.core.network import Params
from filterviz.core.relu import relu
from filterviz.networks.layers import conv_one_channel
from filterviz.networks.torch_ops import channels_last_kernel, channels_last_kernels

Whole = Callable[[jax.Array], jax.Array]
"""A layer's whole output, as torch gave it, to ``[N, h, w, C]``."""


def one_channel(
    traced: Any,
    params: Params,
    nchw: jax.Array,
    path: str,
    index: jax.Array | int,
    redirect_relu: bool,
    whole: Whole,
) -> jax.Array:
    """Channel ``index`` of submodule ``path`` for images ``[N, C, H, W]``: ``[N, h, w]``."""
    torch = traced.torch
    seen: dict[str, Any] = {}
    with channels_last_kernels(params) as plain:
        outputs = traced(plain, nchw, (path,), redirect_relu, _watcher(traced, path, seen))
        conv, images, after = _source(torch, traced.submodules[path], seen)
        weight = None if conv is None else f"{traced.paths[id(conv)]}.weight"
        if weight is None or weight not in plain or images is None:
            return jnp.take(whole(outputs[path]), index, axis=-1)
        kernel = channels_last_kernel(plain[weight])  # the hoisted one where the params are prepared
    bias = plain.get(f"{traced.paths[id(conv)]}.bias")
    (pad_y, pad_x), stride = conv.padding, tuple(conv.stride)
    pads = ((int(pad_y), int(pad_y)), (int(pad_x), int(pad_x)))
    total = conv_one_channel(jnp.transpose(images, (0, 2, 3, 1)), kernel, bias, index, stride, pads)
    return relu(total, redirect_relu) if after else total


def _watcher(traced: Any, path: str, seen: dict[str, Any]) -> Callable[[], list[Any]]:
    # Hooks for one run: every convolution's input and output, and what the target takes in.
    torch, env, target = traced.torch, traced.env, traced.submodules[path]

    def watch() -> list[Any]:
        last: dict[str, Any] = {}

        def after_conv(conv: Any, inputs: tuple, output: Any) -> None:
            last.update(conv=conv, images=env.t2j_iso(inputs[0]), output=output)

        def before_target(_module: Any, inputs: tuple) -> None:
            seen.clear()
            seen.update(taken=inputs[0] if inputs else None, images=None, before=dict(last))
            if isinstance(target, torch.nn.Conv2d) and inputs:
                seen["images"] = env.t2j_iso(inputs[0])

        convolutions = [m for m in traced.module.modules() if isinstance(m, torch.nn.Conv2d)]
        handles = [conv.register_forward_hook(after_conv) for conv in convolutions]
        return [*handles, target.register_forward_pre_hook(before_target)]

    return watch


def _source(torch: Any, target: Any, seen: dict[str, Any]) -> tuple[Any, jax.Array | None, bool]:
    # The convolution whose one channel gives the target's (None if there is none), its input images, and
    # whether a ReLU follows it.
    if isinstance(target, torch.nn.Conv2d):
        return (target, seen.get("images"), False) if _plain(torch, target) else (None, None, False)
    before = seen.get("before") or {}
    conv = before.get("conv")
    if isinstance(target, torch.nn.ReLU) and conv is not None and seen.get("taken") is before.get("output"):
        return (conv, before["images"], True) if _plain(torch, conv) else (None, None, False)
    return None, None, False


def _plain(torch: Any, conv: Any) -> bool:
    # A convolution conv_one_channel computes: one group, no dilation, zero padding given as numbers.
    padding = conv.padding
    return (
        conv.groups == 1
        and tuple(conv.dilation) == (1, 1)
        and conv.padding_mode == "zeros"
        and not isinstance(padding, str)
        and isinstance(conv, torch.nn.Conv2d)
    )
