"""Building blocks the built-in networks share: a max-pool with a fusable gradient, and Lucid's ReLU
whose gradient is redirected when it would be zero for a whole image."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def max_pool2x2(images: jax.Array) -> jax.Array:
    """2x2 max-pool, stride 2, 'valid' padding: ``float32[N, H, W, C] -> float32[N, H//2, W//2, C]``.

    Written as a max over a reshape rather than ``lax.reduce_window``: the values are the same, and the
    gradient becomes elementwise masks that XLA fuses, where reduce_window's select-and-scatter runs
    as a slow loop on CPU (10-15% of a deep layer's ascent step). The two gradients differ only where a
    window holds tied maxima; after a ReLU such ties are zeros, whose gradient the ReLU blocks anyway.
    """
    batch, height, width, channels = images.shape
    height, width = height // 2, width // 2
    cropped = images[:, : 2 * height, : 2 * width, :]  # 'valid': an odd last row or column is dropped
    return cropped.reshape(batch, height, 2, width, 2, channels).max(axis=(2, 4))


@jax.custom_vjp
def redirected_relu(x: jax.Array) -> jax.Array:
    """ReLU whose gradient is redirected when it would be zero for a whole image (Lucid's override).

    Forward: ``max(x, 0)``. Backward, per image of ``x [N, ...]``: the ReLU's own gradient if any of it is
    non-zero; otherwise the cotangent is let through where ``x < 0`` too, except where it would push
    ``x`` further down. So a filter that is off everywhere on the start image still gets a direction to
    turn on, instead of a zero gradient forever. Values are never changed, only gradients.
    """
    return jnp.maximum(x, 0)


def _redirected_relu_forward(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.maximum(x, 0), x


def _redirected_relu_backward(x: jax.Array, cotangent: jax.Array) -> tuple[jax.Array]:
    relu_gradient = jnp.where(x < 0, 0, cotangent)
    # The cotangent is that of a loss being minimised: positive means "lower x".
    redirected = jnp.where((x < 0) & (cotangent > 0), 0, cotangent)
    axes = tuple(range(1, x.ndim))
    alive = jnp.any(relu_gradient != 0, axis=axes, keepdims=True)
    return (jnp.where(alive, relu_gradient, redirected),)


redirected_relu.defvjp(_redirected_relu_forward, _redirected_relu_backward)


def relu(x: jax.Array, redirect: bool) -> jax.Array:
    """``max(x, 0)``, with :func:`redirected_relu`'s gradient when ``redirect``."""
    return redirected_relu(x) if redirect else jax.nn.relu(x)
