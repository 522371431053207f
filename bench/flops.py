"""FLOP counts of the ascent, counted before optimising: 2 FLOPs per multiply-add of each convolution.

A step of the ascent for one filter is a forward pass up to the target layer and the gradient back to
the image. The forward computes every channel of the layers below the target and one channel of the
target (filterviz's one-channel head); the backward computes, for every conv layer passed, the gradient
with respect to its input, which costs what its forward costs. No weight gradients are computed.
Pooling, ReLU and the update are memory-bound and not counted.
"""

from __future__ import annotations

from filterviz.model import LAYER_NAMES, LAYERS, layer_spec, output_size


def conv_flops(height: int, width: int, channels_in: int, channels_out: int) -> int:
    """A 3x3 'same' convolution's FLOPs on an ``height x width`` map."""
    return 2 * height * width * 9 * channels_in * channels_out


def ascent_step_flops(layer: str, height: int, width: int, *, full_target: bool = False) -> int:
    """FLOPs of one ascent step of one filter of ``layer`` at ``height x width`` input.

    With ``full_target`` the target layer counts all its channels, as a plain port computes them.
    """
    spec = layer_spec(layer)
    target_conv = LAYER_NAMES.index(spec.name) - (1 if spec.kind == "pool" else 0)
    total = 0
    channels_in = 3
    for index, conv in enumerate(LAYERS[: target_conv + 1]):
        if conv.kind != "conv":
            continue
        h, w = output_size(conv.name, height, width)
        channels_out = conv.channels if (index < target_conv or full_target) else 1
        forward = conv_flops(h, w, channels_in, channels_out)
        total += 2 * forward  # the forward and the gradient with respect to its input
        channels_in = conv.channels
    return total
