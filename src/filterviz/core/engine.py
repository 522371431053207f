"""The one engine: optimise images that maximise an objective on a network, with any method.

The core, :func:`render_one`, optimises the K images of one objective::

    state = AscentState(variables, optimizer_state, key)          # carried through lax.fori_loop
    each step:  pixels     = parameterization.to_pixels(variables)  # float32[K, H, W, 3], 0-255
                copies     = transforms(key_k, pixels)              # K * copies random views
                value      = objective(network(preprocess(copies)))
                variables += optimizer(gradient of value)

Its static settings are one :class:`Ascent` value, built once by the caller (network, method, size,
frames); what may change without recompiling (the learning rate) travels traced, as :class:`Tunables`.
Nothing in a program calls back to the host, so every program can be kept in JAX's persistent
compilation cache (a program with a host callback never is), and progress is counted per chunk, by the
caller. :func:`render_and_measure` vmaps it over a batch of objectives
(every filter of a layer is one batched channel objective) and measures each result in float32;
:func:`render_batch` jits that, once per :class:`Ascent` and objective structure;
:func:`filterviz.draw.rendering.render` checks everything,
chunks the batch by device memory and shows progress. The notebook's method is the ``notebook`` preset
of this engine, and where an objective is one channel of a layer the network can compute alone (VGG's
every layer), every method uses that fast path: only that channel of the layer, not all of them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from filterviz.core.ascent_checks import start_parameterization
from filterviz.core.checks import compute_dtype, matmul_precision
from filterviz.core.methods import Method
from filterviz.core.network import Network, Params, preprocess
from filterviz.core.objectives import Objective
from filterviz.core.pictures import alpha_map
from filterviz.core.transforms import compose, with_view
from filterviz.errors import SettingError

# ----------------------------------------------------------------------------------------------------
# What an ascent is: its static settings, built once, and the values that vary without recompiling.


@dataclasses.dataclass(frozen=True)
class Ascent:
    """The static settings of one compiled ascent program, built once by the caller.

    Attributes:
      network: the network.
      method: the method (its :class:`~filterviz.core.methods.Optimizer`'s rate set to 1 when the rate
        travels in :attr:`Tunables.learning_rate`; see :meth:`Method.split_rate`).
      size: ``(H, W)`` of the result.
      frame_every: also return the pixels every so many steps, or None.
      measure: measure each objective on its final images, in float32.
    """

    network: Network
    method: Method
    size: tuple[int, int]
    frame_every: int | None = None
    measure: bool = True


class Tunables(NamedTuple):
    """The traced inputs of an ascent program, which change without recompiling it: the optimizer's
    learning rate (``float32[]``, or None for the method's own)."""

    learning_rate: jax.Array | float | None = None


_FIXED = Tunables()
"""No traced rate: the method's own settings."""


# ----------------------------------------------------------------------------------------------------
# The core: one objective, its K images.


class AscentState(NamedTuple):
    """What the optimisation loop carries: the parameterization's variables (pixels, or a spectrum),
    the optimizer's state, the PRNG key and, for a method with ``alpha``, the summed absolute pixel
    gradient ``float32[K, H, W]``."""

    variables: jax.Array
    optimizer_state: Any
    key: jax.Array
    attribution: jax.Array | None = None


class Drawn(NamedTuple):
    """What :func:`render_and_measure` returns for ``B`` objectives of ``K`` images each.

    Attributes:
      pixels: ``float32[B, K, H, W, 3]``, 0-255.
      activations: ``float32[B]``, each objective on its final images (zeros unless measured).
      frames: ``float32[B, F, K, H, W, 3]`` or None.
      alpha: ``float32[B, K, H, W]`` in [0, 1] for a method with ``alpha``, else None.
    """

    pixels: jax.Array
    activations: jax.Array
    frames: jax.Array | None
    alpha: jax.Array | None


def objective_value(
    network: Network,
    prepared: Params,
    objective: Objective,
    method: Method,
    pixels: jax.Array,
    key: jax.Array | None,
) -> jax.Array:
    """``objective`` on ``pixels float32[K, H, W, 3]``, seen through the method's transforms when ``key``
    is given (``transform_copies`` random views each), at its viewing scale, and its preprocessing; one
    forward pass, of only the target channel where the objective is one channel
    (:meth:`Network.channel_activation`)."""
    if key is not None and (method.transforms or method.view):
        copies = jnp.repeat(pixels, method.transform_copies, axis=0)
        keys = jax.random.split(key, copies.shape[0])
        pixels = jax.vmap(compose(with_view(method.transforms, method.view)))(keys, copies)
    elif method.view is not None:  # measured: no random view, the whole picture at the viewing scale
        keys = jax.random.split(jax.random.key(0), pixels.shape[0])
        pixels = jax.vmap(compose(with_view((), method.view)))(keys, pixels)
    preprocessing = method.resolved(network).preprocessing
    inputs = preprocess(pixels, preprocessing).astype(compute_dtype(method.precision))
    single = objective.single_channel()
    if single is not None:
        layer, index = single
        activation = network.channel_activation(
            prepared, inputs, layer, index, redirect_relu=method.redirect_relu
        )
        return jnp.mean(activation.astype(jnp.float32))
    layers = network.sorted(objective.layers)
    return objective(network.apply(prepared, inputs, layers, redirect_relu=method.redirect_relu))


def measured_value(network: Network, params: Params, objective: Objective, method: Method, pixels: jax.Array):
    """``objective`` on its final ``pixels float32[K, H, W, 3]`` as ``method`` feeds them, with no
    transforms, in full float32 whatever the method's precision: the achieved value that ranks filters."""
    with matmul_precision("float32"):
        measured = dataclasses.replace(method, precision="float32")
        return objective_value(network, params, objective, measured, pixels, None)


def _step_function(
    ascent: Ascent, prepared: Params, objective: Objective, size: tuple[int, int], tunables: Tunables
):
    # One step of gradient ascent at `size`, as `lax.fori_loop` takes it: `(index, state) -> state`.
    network, method = ascent.network, ascent.method
    optimizer = method.optimizer_transformation(tunables.learning_rate)
    to_pixels = functools.partial(method.parameterization.to_pixels, height=size[0], width=size[1])

    def pixel_loss(pixels: jax.Array, step_key: jax.Array) -> jax.Array:
        return -objective_value(network, prepared, objective, method, pixels, step_key)

    def step(_: jax.Array, state: AscentState) -> AscentState:
        key, step_key = jax.random.split(state.key)
        # Through the pixels, so that their gradient (the alpha's attribution) comes at no extra cost.
        pixels, to_variables = jax.vjp(to_pixels, state.variables)
        pixel_gradient = jax.grad(pixel_loss)(pixels, step_key)
        (gradient,) = to_variables(pixel_gradient)
        updates, optimizer_state = optimizer.update(gradient, state.optimizer_state, state.variables)
        attribution = state.attribution
        if attribution is not None:
            attribution = attribution + jnp.mean(jnp.abs(pixel_gradient), axis=-1)
        return AscentState(optax.apply_updates(state.variables, updates), optimizer_state, key, attribution)

    return step


def _stage_state(
    method: Method, variables: jax.Array, key: jax.Array, size: tuple[int, int], tunables: Tunables
) -> AscentState:
    # The state before the first step of one octave stage (of the whole ascent, without octaves).
    # Zeros made from the variables, so that inside a sweep's shard_map they vary by device as they do.
    attribution = 0.0 * method.parameterization.to_pixels(variables, *size)[..., 0] if method.alpha else None
    optimizer = method.optimizer_transformation(tunables.learning_rate)
    return AscentState(variables, optimizer.init(variables), key, attribution)


def _optimise(
    ascent: Ascent,
    prepared: Params,
    objective: Objective,
    variables: jax.Array,
    key: jax.Array,
    size: tuple[int, int],
    tunables: Tunables,
) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """``method.steps`` steps from ``variables`` at ``size`` (one octave stage); returns the final
    variables, with ``frame_every`` the pixels after every ``frame_every`` steps
    ``float32[F, K, H, W, 3]``, and with ``alpha`` the summed absolute pixel gradient ``[K, H, W]``."""
    method, frame_every = ascent.method, ascent.frame_every
    step = _step_function(ascent, prepared, objective, size, tunables)
    state = _stage_state(method, variables, key, size, tunables)
    if not frame_every:
        state = lax.fori_loop(0, method.steps, step, state)
        return state.variables, None, state.attribution

    def segment(state: AscentState, _: None) -> tuple[AscentState, jax.Array]:
        state = lax.fori_loop(0, frame_every, step, state)
        return state, method.parameterization.to_pixels(state.variables, *size)

    state, frames = lax.scan(segment, state, None, length=method.steps // frame_every)
    state = lax.fori_loop(0, method.steps % frame_every, step, state)
    return state.variables, frames, state.attribution


def resize_pixels(pixels: jax.Array, size: tuple[int, int]) -> jax.Array:
    """``float32[N, h, w, 3] -> float32[N, H, W, 3]``, bicubic."""
    return jax.image.resize(pixels, (pixels.shape[0], *size, 3), "cubic")


def _requantized_resize(pixels: jax.Array, size: tuple[int, int]) -> jax.Array:
    # The Keras example upscales the uint8 picture (std 0.25) and maps it back with the old mean and std.
    mean = jnp.mean(pixels, axis=(1, 2, 3), keepdims=True)
    std = jnp.std(pixels, axis=(1, 2, 3), keepdims=True)
    picture = jnp.floor(jnp.clip((pixels - mean) / (std + 1e-7) * 0.25 + 0.5, 0, 1) * 255)
    picture = jnp.clip(resize_pixels(picture, size), 0, 255)
    return (picture / 255 - 0.5) * 4 * std + mean


def _grown(method: Method, variables: jax.Array, photo: jax.Array | None, stage, following) -> jax.Array:
    # The image of one octave stage grown to the next; a deep dream adds back what shrinking the photo
    # lost between the two sizes.
    octaves = method.octaves
    assert octaves is not None  # only called between octave stages
    grown = (_requantized_resize if octaves.requantize else resize_pixels)(variables, following)
    if octaves.reinject_detail and photo is not None:
        lost = resize_pixels(photo, following) - resize_pixels(resize_pixels(photo, stage), following)
        grown = grown + lost
    return grown


def start_photo(method: Method, start: jax.Array | None) -> jax.Array | None:
    """One objective's start photo ``[H, W, 3]`` as each of its K images starts, ``[K, H, W, 3]``, or None."""
    return None if start is None else jnp.broadcast_to(start, (method.images_per_filter, *start.shape))


def _start_variables(
    method: Method, start: jax.Array | None, key: jax.Array, first: tuple[int, int], size: tuple[int, int]
) -> tuple[jax.Array, jax.Array | None]:
    # The variables of the first stage (size `first`), and the start photo ([K, H, W, 3]) if any.
    photo = start_photo(method, start)
    if photo is None:
        return method.parameterization.init(key, method.images_per_filter, *first), None
    pixels = resize_pixels(photo, first) if first != size else photo
    return start_parameterization(method).from_pixels(pixels), photo


def _final_pixels(
    method: Method, variables: jax.Array, attribution: jax.Array | None, size: tuple[int, int]
) -> tuple[jax.Array, jax.Array | None]:
    # The result's pixels [K, H, W, 3] and alpha [K, H, W] (or None) from the last variables.
    with matmul_precision(method.precision):
        pixels = method.parameterization.to_pixels(variables, *size)
    if method.picture == "clip":  # MaCo's pixels reach past 0-255 while optimised; its picture does not
        pixels = jnp.clip(pixels, 0.0, 255.0)
    return pixels, (None if attribution is None else alpha_map(attribution))


def stage_sizes(method: Method, size: tuple[int, int]) -> list[tuple[int, int]]:
    """The ``(H, W)`` of each octave stage of an ascent to ``size`` (one stage without octaves)."""
    stages = method.octaves.sizes(*size) if method.octaves else [size]
    if min(min(stage) for stage in stages) < 1:
        raise SettingError(f"octave stages {stages} shrink a {size[0]}x{size[1]} image to nothing")
    return stages


def render_one(
    ascent: Ascent,
    prepared: Params,
    objective: Objective,
    start: jax.Array | None,
    key: jax.Array,
    tunables: Tunables = _FIXED,
) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """Optimise the K images of one (unbatched) ``objective``; the pure core, vmapped by :func:`render`.

    Args:
      ascent: the static settings (network, method, size, frames, measuring).
      prepared: parameters from ``network.prepared`` (cast to the compute type, kernels flipped ...).
      objective: one objective (no batch axis on its arguments).
      start: ``float32[H, W, 3]`` start pixels (pixel methods only), or None to draw from ``key``.
      key: PRNG key of this objective: its start and every step's transforms.
      tunables: the traced learning rate.

    Returns:
      ``(pixels float32[K, H, W, 3], frames float32[F, K, H, W, 3] or None, alpha float32[K, H, W] in
      [0, 1] or None)``.
    """
    method, size = ascent.method, ascent.size
    init_key, key = jax.random.split(key)
    stages = stage_sizes(method, size)
    variables, photo = _start_variables(method, start, init_key, stages[0], size)
    all_frames, attribution = [], None
    with matmul_precision(method.precision):
        for index, stage in enumerate(stages):
            stage_key = jax.random.fold_in(key, index)
            variables, frames, attribution = _optimise(
                ascent, prepared, objective, variables, stage_key, stage, tunables
            )
            if frames is not None:
                all_frames.append(
                    frames if stage == size else jax.vmap(lambda f: resize_pixels(f, size))(frames)
                )
            following = stages[index + 1] if index + 1 < len(stages) else size
            if following != stage:
                variables = _grown(method, variables, photo, stage, following)
    pixels, alpha = _final_pixels(method, variables, attribution, size)
    return pixels, (jnp.concatenate(all_frames) if all_frames else None), alpha


def _measured(ascent: Ascent, params: Params, objective: Objective, pixels: jax.Array) -> jax.Array:
    # Each objective's value on its final images, in float32 (zero unless the ascent measures).
    if not ascent.measure:
        return jnp.zeros((), jnp.float32)
    return measured_value(ascent.network, params, objective, ascent.method, pixels)


def _start_axis(start: jax.Array | None) -> int | None:
    # A start image is shared ([H, W, 3]) or one per objective ([B, H, W, 3]).
    return 0 if start is not None and start.ndim == 4 else None


def render_and_measure(
    ascent: Ascent,
    params: Params,
    objective: Objective,
    start: jax.Array | None,
    keys: jax.Array,
    tunables: Tunables = _FIXED,
) -> Drawn:
    """:func:`render_one` vmapped over a batched ``objective`` and ``keys [B]`` (and ``start`` when it is
    ``[B, H, W, 3]``, one per objective), each objective then measured on its final images in float32
    (zeros unless ``ascent.measure``). Not jitted: :func:`render_batch` jits it, sweeps wrap it in
    their sharded jit."""
    prepared = ascent.network.prepared(params, compute_dtype(ascent.method.precision))

    def one(objective: Objective, key: jax.Array, start: jax.Array | None) -> Drawn:
        pixels, frames, alpha = render_one(ascent, prepared, objective, start, key, tunables)
        return Drawn(pixels, _measured(ascent, params, objective, pixels), frames, alpha)

    axes = (objective.batch_axes(), 0, _start_axis(start))
    return jax.vmap(one, in_axes=axes)(objective, keys, start)


render_batch = jax.jit(render_and_measure, static_argnames=("ascent",))
""":func:`render_and_measure`, jitted: one program per :class:`Ascent` and objective structure."""


@functools.partial(jax.jit, static_argnames=("network", "method"))
def measure_batch(
    network: Network, params: Params, objective: Objective, pixels: jax.Array, *, method: Method
) -> jax.Array:
    """Each objective of a batched ``objective [B]`` on its images ``pixels float32[B, K, H, W, 3]``, as
    ``method`` feeds them, in float32: ``-> float32[B]``."""

    def one(objective: Objective, images: jax.Array) -> jax.Array:
        return measured_value(network, params, objective, method, images)

    return jax.vmap(one, in_axes=(objective.batch_axes(), 0))(objective, pixels)


def filter_keys(seed: int, filter_indices: Sequence[int] | np.ndarray | jax.Array) -> jax.Array:
    """The PRNG key of each filter index, as sweeps give them: ``fold_in(key(seed), index)``, so a filter's
    picture does not depend on which chunk or device drew it."""
    if isinstance(filter_indices, jax.core.Tracer):  # inside a sweep's compiled chunk
        return _fold_in_each(seed_key(seed), filter_indices.astype(jnp.int32))
    indices = np.asarray(filter_indices, np.int64).astype(np.int32)  # cast on the host: no program for it
    return _fold_in_each(seed_key(seed), jax.device_put(indices))


def seed_key(seed: int) -> jax.Array:
    """``jax.random.key(seed)``, made on the host where JAX would compile two small programs for it: with
    threefry and 32-bit integers, the key is ``[0, seed mod 2**32]``."""
    settings: Any = jax.config
    if settings.jax_default_prng_impl != "threefry2x32" or settings.jax_enable_x64:
        return jax.random.key(seed)
    data = jax.device_put(np.array([0, seed % 2**32], np.uint32))
    return jax.random.wrap_key_data(data, impl="threefry2x32")


@jax.jit  # one program for every key, not an eager op (and its casts) each
def _fold_in_each(base: jax.Array, indices: jax.Array) -> jax.Array:
    return jax.vmap(lambda index: jax.random.fold_in(base, index))(indices)
