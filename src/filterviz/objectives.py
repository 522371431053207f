"""Objectives: pure functions ``(params, image float32[H, W, 3]) -> float32[]`` that the ascent maximises.

Each takes one image (no batch axis): the batch over filters is a ``vmap`` at the call site.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from filterviz.model import Params, channel_activation


def filter_mean(params: Params, layer: str, filter_index: jax.Array | int, image: jax.Array) -> jax.Array:
    """Mean activation of filter ``filter_index`` of ``layer`` over the image: the notebook's loss.

    ``image`` is ``float32[H, W, 3]`` (or bfloat16, with bfloat16 params); ``filter_index`` may be traced.
    Returns a float32 scalar: the mean is taken in float32 whatever the compute type.
    """
    return jnp.mean(channel_activation(params, image[None], layer, filter_index).astype(jnp.float32))
