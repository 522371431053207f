"""The ReLU of the networks and of the ``concept`` objective, with Lucid's redirected gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp


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
