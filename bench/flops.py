"""FLOP counts of the ascent, counted before optimising: 2 FLOPs per multiply-add of each convolution.

A step of the ascent for one filter is a forward pass up to the target layer and the gradient back to
the image. For a VGG the count is by hand: the forward computes every channel of the layers below the
target and one channel of the target (the engine's one-channel fast path); the backward computes, for
every conv layer passed, the gradient with respect to its input, which costs what its forward costs. No
weight gradients are computed. Pooling, ReLU and the update are memory-bound and not counted.

Any other network (ResNet50, a user's model) is counted by XLA itself (``cost_analysis`` of the
compiled step), which the tests check against the hand count on VGG16.
"""

from __future__ import annotations

from typing import Any

from filterviz.core.network import Network


def conv_flops(height: int, width: int, channels_in: int, channels_out: int, kernel: int = 3) -> int:
    """A ``kernel x kernel`` convolution's FLOPs producing an ``height x width`` map."""
    return 2 * height * width * kernel * kernel * channels_in * channels_out


def is_plain_vgg(network: Network) -> bool:
    """A VGG: nothing but 3x3 'same' convolutions and 2x2 pools, in a chain."""
    return {layer.kind for layer in network.layers} <= {"Conv2D", "MaxPooling2D"}


def ascent_step_flops(
    network: Network, layer: str, height: int, width: int, *, full_target: bool = False
) -> int:
    """FLOPs of one ascent step of one filter of a VGG's ``layer`` at ``height x width`` input.

    With ``full_target`` the target layer counts all its channels, as a plain port computes them.
    """
    if not is_plain_vgg(network):
        raise ValueError(f"{network.name} is counted by XLA: use compiled_flops")
    target = network.order(layer)
    convs = [spec for spec in network.layers[: target + 1] if spec.kind == "Conv2D"]
    total, channels_in = 0, 3
    for position, conv in enumerate(convs):
        h, w = network.output_size(conv.name, height, width)
        last = position == len(convs) - 1
        channels_out = 1 if last and not full_target else conv.channels
        total += 2 * conv_flops(h, w, channels_in, channels_out)  # the forward and the input gradient
        channels_in = conv.channels
    return total


def compiled_flops(compiled: Any) -> float:
    """The FLOPs XLA counts in a compiled program (``jax.jit(f).lower(...).compile()``)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # older JAX: one dict per computation
        analysis = analysis[0]
    return float(analysis.get("flops", 0.0))
