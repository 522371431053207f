"""The ascent of :func:`filterviz.core.engine.render_batch` in segments of steps, run from the host.

:func:`begin_batch`, then :func:`advance_batch` as often as wanted (one program per octave stage, for any
number of steps, a frame's pixels with it when asked), :func:`next_stage_batch` between octave stages,
and :func:`finish_batch`. Together they compute what ``render_batch`` does; between segments the host
can show progress, and no program calls back to it.
"""

from __future__ import annotations

import functools

import jax
from jax import lax

from filterviz.core.checks import compute_dtype, matmul_precision
from filterviz.core.engine import (
    _FIXED,
    Ascent,
    AscentState,
    Drawn,
    Tunables,
    _final_pixels,
    _grown,
    _measured,
    _stage_state,
    _start_axis,
    _start_variables,
    _step_function,
    resize_pixels,
    stage_sizes,
    start_photo,
)
from filterviz.core.network import Params
from filterviz.core.objectives import Objective


def stages(ascent: Ascent) -> int:
    """How many octave stages ``ascent`` has (1 without octaves), each ``method.steps`` steps."""
    return len(stage_sizes(ascent.method, ascent.size))


@functools.partial(jax.jit, static_argnames=("ascent",))
def begin_batch(
    ascent: Ascent, start: jax.Array | None, keys: jax.Array, tunables: Tunables = _FIXED
) -> tuple[AscentState, jax.Array]:
    """The state of ``B`` objectives before their first step (``keys [B]``, ``start`` as in
    :func:`~filterviz.core.engine.render_and_measure`), every leaf with a leading ``B`` axis; and the keys
    ``[B]`` from which each later octave stage takes its own."""
    method, size = ascent.method, ascent.size
    first = stage_sizes(method, size)[0]

    def one(key: jax.Array, start: jax.Array | None) -> tuple[AscentState, jax.Array]:
        init_key, key = jax.random.split(key)
        variables, _ = _start_variables(method, start, init_key, first, size)
        with matmul_precision(method.precision):
            return _stage_state(method, variables, jax.random.fold_in(key, 0), first, tunables), key

    return jax.vmap(one, in_axes=(0, _start_axis(start)))(keys, start)


@functools.partial(jax.jit, static_argnames=("ascent", "stage", "frame"))
def advance_batch(
    ascent: Ascent,
    params: Params,
    objective: Objective,
    state: AscentState,
    steps: jax.Array | int,
    tunables: Tunables = _FIXED,
    stage: int = 0,
    frame: bool = False,
) -> AscentState | tuple[AscentState, jax.Array]:
    """``state`` after ``steps`` more steps (``int32[]``, traced: one program for every segment's length)
    of octave stage ``stage``; with ``frame``, also the pixels then, ``float32[B, K, H, W, 3]`` at the
    result's size (an ascent's frame)."""
    method, size = ascent.method, stage_sizes(ascent.method, ascent.size)[stage]
    prepared = ascent.network.prepared(params, compute_dtype(method.precision))

    def one(objective: Objective, state: AscentState) -> AscentState | tuple[AscentState, jax.Array]:
        step = _step_function(ascent, prepared, objective, size, tunables)
        with matmul_precision(method.precision):
            state = lax.fori_loop(0, steps, step, state)
            if not frame:
                return state
            pixels = method.parameterization.to_pixels(state.variables, *size)
            return state, (pixels if size == ascent.size else resize_pixels(pixels, ascent.size))

    return jax.vmap(one, in_axes=(objective.batch_axes(), 0))(objective, state)


def _grown_to(ascent: Ascent, variables: jax.Array, start: jax.Array | None, stage: int, size) -> jax.Array:
    # The variables of octave stage `stage` grown to `size`, as the unsegmented ascent grows them.
    current = stage_sizes(ascent.method, ascent.size)[stage]
    if current == size:
        return variables
    with matmul_precision(ascent.method.precision):
        return _grown(ascent.method, variables, start_photo(ascent.method, start), current, size)


@functools.partial(jax.jit, static_argnames=("ascent", "stage"))
def next_stage_batch(
    ascent: Ascent,
    state: AscentState,
    keys: jax.Array,
    start: jax.Array | None,
    stage: int,
    tunables: Tunables = _FIXED,
) -> AscentState:
    """The state before the first step of octave stage ``stage + 1``: the images grown to its size, the
    optimizer started afresh, the stage's own key (``keys`` from :func:`begin_batch`)."""
    method, following = ascent.method, stage_sizes(ascent.method, ascent.size)[stage + 1]

    def one(state: AscentState, key: jax.Array, start: jax.Array | None) -> AscentState:
        variables = _grown_to(ascent, state.variables, start, stage, following)
        with matmul_precision(method.precision):
            return _stage_state(method, variables, jax.random.fold_in(key, stage + 1), following, tunables)

    return jax.vmap(one, in_axes=(0, 0, _start_axis(start)))(state, keys, start)


@functools.partial(jax.jit, static_argnames=("ascent",))
def finish_batch(
    ascent: Ascent, params: Params, objective: Objective, state: AscentState, start: jax.Array | None = None
) -> Drawn:
    """What :func:`~filterviz.core.engine.render_batch` returns, from the state after every step."""
    last = stages(ascent) - 1

    def one(objective: Objective, state: AscentState, start: jax.Array | None) -> Drawn:
        variables = _grown_to(ascent, state.variables, start, last, ascent.size)
        pixels, alpha = _final_pixels(ascent.method, variables, state.attribution, ascent.size)
        return Drawn(pixels, _measured(ascent, params, objective, pixels), None, alpha)

    return jax.vmap(one, in_axes=(objective.batch_axes(), 0, _start_axis(start)))(objective, state, start)
