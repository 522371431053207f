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


VGG16_CLASSIFIER_FLOPS = 2 * (25088 * 4096 + 4096 * 4096 + 4096 * 1000)
"""VGG16's three dense layers, which a model called whole (as Lucent calls it) also runs."""


def forward_flops(network: Network, layer: str, height: int, width: int) -> int:
    """FLOPs of one image's forward pass through a VGG, every channel, up to ``layer``."""
    return ascent_step_flops(network, layer, height, width, full_target=True) // 2


def ascent_step_flops(
    network: Network,
    layer: str,
    height: int,
    width: int | None = None,
    *,
    full_target: bool = False,
    tool: str = "filterviz",
) -> int:
    """FLOPs of one ascent step of one filter of a VGG's ``layer`` at ``height x width`` input (``width``
    defaults to ``height``): the forward pass and the input gradient.

    With ``full_target`` the target layer counts all its channels, as a plain port computes them.
    ``tool="lucent"`` counts a whole-model forward (every conv and the classifier, as ``model(image)``
    runs it) and the gradient back from ``layer``, each channel of the target layer computed.
    """
    width = height if width is None else width
    if tool == "lucent":
        last_conv = [spec.name for spec in network.layers if spec.kind == "Conv2D"][-1]
        to_target = ascent_step_flops(network, layer, height, width, full_target=True)
        return to_target // 2 + forward_flops(network, last_conv, height, width) + VGG16_CLASSIFIER_FLOPS
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


def step_flops(network: Network, params: Any, layer: str, size: int, method: str) -> float:
    """FLOPs of one filter-step of ``method`` (``notebook`` or ``lucid``): counted by hand for a VGG's
    notebook step, else XLA's count of one compiled step."""
    import jax
    import jax.numpy as jnp

    import filterviz
    from filterviz.core.engine import Ascent, render_batch
    from filterviz.core.methods import notebook_method

    if method == "notebook" and is_plain_vgg(network):
        return float(ascent_step_flops(network, layer, size, size))
    chosen = notebook_method(1) if method == "notebook" else filterviz.get_method("lucid", steps=1)
    lowered = render_batch.lower(
        Ascent(network, chosen.resolved(network), (size, size), measure=False),
        params,
        filterviz.channel(layer, jnp.zeros(1, jnp.int32)),
        None if method == "lucid" else jnp.zeros((size, size, 3)),
        jax.random.split(jax.random.key(0), 1),
    )
    return compiled_flops(lowered.compile())


def compiled_flops(compiled: Any) -> float:
    """The FLOPs XLA counts in a compiled program (``jax.jit(f).lower(...).compile()``)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # older JAX: one dict per computation
        analysis = analysis[0]
    return float(analysis.get("flops", 0.0))
