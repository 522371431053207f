"""The one engine: optimise images that maximise an objective on a network, with any method.

The core, :func:`render_one`, optimises the K images of one objective::

    state = AscentState(raw, optimizer_state, key)          # carried through lax.fori_loop
    each step:  pixels  = parameterization.to_pixels(raw)    # float32[K, H, W, 3], 0-255
                copies  = transforms(key_k, pixels)          # K * copies random views
                value   = objective(network(preprocess(copies)))
                raw    += optimizer(gradient of value)

:func:`render_and_measure` vmaps it over a batch of objectives (every filter of a layer is one batched
channel objective) and measures each result in float32; :func:`render_batch` jits that, once per
network, method, objective structure and size; :func:`render` checks everything, chunks the batch by
device memory and shows progress. The notebook's method is the ``notebook`` preset of this engine, and
where an objective is one channel of a layer the network can compute alone (VGG's every layer), every
method uses that fast path: only that channel of the layer, not all of them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from filterviz.checks import (
    check_count,
    check_image_size,
    check_seed,
    compute_dtype,
    default_batch_size,
    matmul_precision,
    padded_chunks,
)
from filterviz.errors import ImageError, SettingError
from filterviz.images import check_finite
from filterviz.methods import DEFAULT_SIZE, Method, get_method
from filterviz.network import Network, Params, preprocess
from filterviz.network import network as get_network
from filterviz.objectives import Objective, channel
from filterviz.param import Pixels
from filterviz.progress import Progress, advance, count_of, wanted
from filterviz.transforms import compose

# ----------------------------------------------------------------------------------------------------
# Loops that can tell the host how far they have come.


@dataclasses.dataclass(frozen=True)
class StepReport:
    """How a compiled loop tells the host how far it has come: it runs as ``segments`` loops in a row
    and after each calls ``callback(steps done)`` on the host (static: equal reports share one program).
    """

    callback: Callable[[int], None]
    segments: int = 10


State = TypeVar("State")


def _report(report: StepReport, steps: int, state: State) -> State:
    # The host callback reads one value of the state, so it runs after the segment that made it; the
    # state then takes a zero from it, so the next segment runs after it and nothing is pruned. Under
    # vmap it runs once for the whole batch and counts each element's steps.
    leaves, tree = jax.tree.flatten(state)
    position = next(i for i, leaf in enumerate(leaves) if jnp.issubdtype(leaf.dtype, jnp.floating))
    marker = leaves[position].reshape(-1)[0].astype(jnp.float32)

    def on_host(values: np.ndarray) -> np.ndarray:
        report.callback(steps * int(np.size(values)))
        return np.zeros(np.shape(values), np.float32)

    zero = jax.pure_callback(
        on_host, jax.ShapeDtypeStruct((), jnp.float32), marker, vmap_method="expand_dims"
    )
    leaves[position] = leaves[position] + zero.astype(leaves[position].dtype)
    return jax.tree.unflatten(tree, leaves)


def run_steps(
    steps: int, step: Callable[[Any, State], State], state: State, report: StepReport | None
) -> State:
    """``state = step(i, state)`` for ``i`` in ``range(steps)``, in ``lax.fori_loop``; with ``report``, as a
    few loops in a row with a report to the host after each (nothing crosses to the host inside one)."""
    if report is None or steps == 0:
        return lax.fori_loop(0, steps, step, state)
    size = -(-steps // max(1, min(report.segments, steps)))
    for begin in range(0, steps, size):
        end = min(begin + size, steps)
        state = _report(report, end - begin, lax.fori_loop(begin, end, step, state))
    return state


# ----------------------------------------------------------------------------------------------------
# The core: one objective, its K images.


class AscentState(NamedTuple):
    """What the optimisation loop carries: the raw variables, the optimizer's state and the PRNG key."""

    raw: jax.Array
    optimizer_state: Any
    key: jax.Array


def preprocessing_of(method: Method, network: Network) -> str:
    """The input convention ``method`` feeds ``network`` (``"network"``: the network's own)."""
    return network.preprocessing if method.preprocessing == "network" else method.preprocessing


def objective_value(
    network: Network,
    prepared: Params,
    objective: Objective,
    method: Method,
    pixels: jax.Array,
    key: jax.Array | None,
) -> jax.Array:
    """``objective`` on ``pixels float32[K, H, W, 3]``, seen through the method's transforms when ``key``
    is given (``transform_copies`` random views each) and its preprocessing; one forward pass, of only
    the target channel where the objective is one channel the network can compute alone."""
    if key is not None and method.transforms:
        copies = jnp.repeat(pixels, method.transform_copies, axis=0)
        keys = jax.random.split(key, copies.shape[0])
        pixels = jax.vmap(compose(method.transforms))(keys, copies)
    inputs = preprocess(pixels, preprocessing_of(method, network)).astype(compute_dtype(method.precision))
    single = objective.single_channel()
    if single is not None and single[0] in network.channel_layers:
        layer, index = single
        activation = network.channel(prepared, inputs, layer, index, method.redirect_relu)
        return jnp.mean(activation.astype(jnp.float32))
    layers = network.sorted(objective.layers)
    return objective(network.apply(prepared, inputs, layers, redirect_relu=method.redirect_relu))


def _optimise(
    network: Network,
    prepared: Params,
    objective: Objective,
    method: Method,
    raw: jax.Array,
    key: jax.Array,
    size: tuple[int, int],
    frame_every: int | None,
    report: StepReport | None = None,
    learning_rate: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """``method.steps`` steps from ``raw``; returns the final raw and, with ``frame_every``, the pixels
    after every ``frame_every`` steps ``float32[F, K, H, W, 3]``. ``report``: see :func:`run_steps`;
    ``learning_rate``: replaces the method's (see :meth:`Method.split_rate`)."""
    optimizer = method.optimizer_transformation(learning_rate)
    height, width = size

    def loss(current: jax.Array, step_key: jax.Array) -> jax.Array:
        pixels = method.parameterization.to_pixels(current, height, width)
        return -objective_value(network, prepared, objective, method, pixels, step_key)

    gradient_of = jax.grad(loss)

    def step(_: jax.Array, state: AscentState) -> AscentState:
        key, step_key = jax.random.split(state.key)
        gradient = gradient_of(state.raw, step_key)
        updates, optimizer_state = optimizer.update(gradient, state.optimizer_state, state.raw)
        return AscentState(optax.apply_updates(state.raw, updates), optimizer_state, key)

    state = AscentState(raw, optimizer.init(raw), key)
    if not frame_every:
        return run_steps(method.steps, step, state, report).raw, None
    # With frames, each frame's steps are one segment (reported, when asked, after each frame).
    per_frame = dataclasses.replace(report, segments=1) if report is not None else None

    def segment(state: AscentState, _: None) -> tuple[AscentState, jax.Array]:
        state = run_steps(frame_every, step, state, per_frame)
        return state, method.parameterization.to_pixels(state.raw, height, width)

    state, frames = lax.scan(segment, state, None, length=method.steps // frame_every)
    state = run_steps(method.steps % frame_every, step, state, per_frame)
    return state.raw, frames


def _resize(pixels: jax.Array, size: tuple[int, int]) -> jax.Array:
    return jax.image.resize(pixels, (pixels.shape[0], *size, 3), "cubic")


def _requantized_resize(pixels: jax.Array, size: tuple[int, int]) -> jax.Array:
    # The Keras example upscales the uint8 picture (std 0.25) and maps it back with the old mean and std.
    mean = jnp.mean(pixels, axis=(1, 2, 3), keepdims=True)
    std = jnp.std(pixels, axis=(1, 2, 3), keepdims=True)
    picture = jnp.floor(jnp.clip((pixels - mean) / (std + 1e-7) * 0.25 + 0.5, 0, 1) * 255)
    picture = jnp.clip(_resize(picture, size), 0, 255)
    return (picture / 255 - 0.5) * 4 * std + mean


def render_one(
    network: Network,
    prepared: Params,
    objective: Objective,
    start: jax.Array | None,
    key: jax.Array,
    *,
    method: Method,
    size: tuple[int, int],
    frame_every: int | None = None,
    report: StepReport | None = None,
    learning_rate: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """Optimise the K images of one (unbatched) ``objective``; the pure core, vmapped by :func:`render`.

    Args:
      network: the network, static.
      prepared: parameters from ``network.prepared`` (cast to the compute type, kernels flipped ...).
      objective: one objective (no batch axis on its arguments).
      start: ``float32[H, W, 3]`` start pixels (pixel methods only), or None to draw from ``key``.
      key: PRNG key of this objective: its start and every step's transforms.
      method: the settings, static.
      size: ``(H, W)`` of the result.
      frame_every: also return the pixels every so many steps.
      report: have the loops tell the host how many steps they have done (:func:`run_steps`).
      learning_rate: a traced ``float32[]`` replacing the method's (:meth:`Method.split_rate`).

    Returns:
      ``(pixels float32[K, H, W, 3], frames float32[F, K, H, W, 3] or None)``.
    """
    count = method.images_per_filter
    init_key, key = jax.random.split(key)
    stages = method.octaves.sizes(*size) if method.octaves else [size]
    if min(min(stage) for stage in stages) < 1:
        raise SettingError(f"octave stages {stages} shrink a {size[0]}x{size[1]} image to nothing")
    parameterization = method.parameterization
    if start is None:
        raw = parameterization.init(init_key, count, *stages[0])
    else:
        photo = jnp.broadcast_to(start, (count, *start.shape))
        raw = parameterization.from_pixels(_resize(photo, stages[0]) if stages[0] != size else photo)
    all_frames = []
    with matmul_precision(method.precision):
        for index, stage in enumerate(stages):
            raw, frames = _optimise(
                network,
                prepared,
                objective,
                method,
                raw,
                jax.random.fold_in(key, index),
                stage,
                frame_every,
                report,
                learning_rate,
            )
            if frames is not None:
                all_frames.append(frames if stage == size else jax.vmap(lambda f: _resize(f, size))(frames))
            following = stages[index + 1] if index + 1 < len(stages) else size
            if following != stage:
                grown = (_requantized_resize if method.octaves.requantize else _resize)(raw, following)
                if method.octaves.reinject_detail and start is not None:
                    # Deep dream: add back what shrinking the photo lost between the two sizes.
                    grown = grown + _resize(photo, following) - _resize(_resize(photo, stage), following)
                raw = grown
        pixels = parameterization.to_pixels(raw, *size)
    return pixels, (jnp.concatenate(all_frames) if all_frames else None)


def render_and_measure(
    network: Network,
    params: Params,
    objective: Objective,
    start: jax.Array | None,
    keys: jax.Array,
    *,
    method: Method,
    size: tuple[int, int],
    frame_every: int | None = None,
    report: StepReport | None = None,
    measure: bool = True,
    learning_rate: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """:func:`render_one` vmapped over a batched ``objective`` and ``keys [B]`` (and ``start`` when it is
    ``[B, H, W, 3]``, one per objective), each objective then measured on its final images in float32
    (zeros without ``measure``), ``learning_rate`` (traced) replacing the method's. Returns
    ``(pixels [B, K, H, W, 3], activations [B], frames)``. Not jitted: :func:`render_batch` jits it,
    sweeps wrap it in their sharded jit."""
    prepared = network.prepared(params, compute_dtype(method.precision))
    measured = dataclasses.replace(method, precision="float32")  # achieved values always in float32

    def one(objective: Objective, key: jax.Array, start: jax.Array | None) -> tuple[Any, ...]:
        pixels, frames = render_one(
            network,
            prepared,
            objective,
            start,
            key,
            method=method,
            size=size,
            frame_every=frame_every,
            report=report,
            learning_rate=learning_rate,
        )
        if not measure:
            return pixels, jnp.zeros((), jnp.float32), frames
        with matmul_precision("float32"):
            achieved = objective_value(network, params, objective, measured, pixels, None)
        return pixels, achieved, frames

    start_axis = 0 if start is not None and start.ndim == 4 else None
    return jax.vmap(one, in_axes=(objective.batch_axes(), 0, start_axis))(objective, keys, start)


render_batch = jax.jit(
    render_and_measure, static_argnames=("network", "method", "size", "frame_every", "report", "measure")
)
""":func:`render_and_measure`, jitted: one program per network, method, objective structure and size."""


@functools.partial(jax.jit, static_argnames=("network", "method"))
def measure_batch(
    network: Network, params: Params, objective: Objective, pixels: jax.Array, *, method: Method
) -> jax.Array:
    """Each objective of a batched ``objective [B]`` on its images ``pixels float32[B, K, H, W, 3]``, as
    ``method`` feeds them, in float32: ``-> float32[B]``."""
    measured = dataclasses.replace(method, precision="float32")

    def one(objective: Objective, images: jax.Array) -> jax.Array:
        with matmul_precision("float32"):
            return objective_value(network, params, objective, measured, images, None)

    return jax.vmap(one, in_axes=(objective.batch_axes(), 0))(objective, pixels)


def render_filters(
    network: Network,
    params: Params,
    layer: str,
    filter_indices: jax.Array,
    start: jax.Array | None,
    seed: int,
    *,
    method: Method,
    size: tuple[int, int],
) -> tuple[jax.Array, jax.Array]:
    """Each filter of ``filter_indices int32[B]`` of ``layer`` with ``method``, keyed by its own index
    (:func:`filter_keys`), so a filter's picture does not depend on which chunk or device computed it.
    Not jitted: sweeps wrap it. Returns ``(pixels float32[B, H, W, 3] (the first of K), activations [B])``."""
    objective = channel(layer, filter_indices)
    keys = filter_keys(seed, filter_indices)
    pixels, achieved, _ = render_and_measure(
        network, params, objective, start, keys, method=method, size=size
    )
    return pixels[:, 0], achieved


def filter_keys(seed: int, filter_indices: Sequence[int] | np.ndarray) -> jax.Array:
    """The PRNG keys :func:`render_filters` gives these filters: ``fold_in(key(seed), index)``."""
    base = jax.random.key(seed)
    return jax.vmap(lambda index: jax.random.fold_in(base, index))(jnp.asarray(filter_indices, jnp.int32))


# ----------------------------------------------------------------------------------------------------
# The checked, chunked entry point.


class Rendering(NamedTuple):
    """What :func:`render` returns, for N objectives (e.g. N filters), K images each.

    Attributes:
      pixels: ``float32[N, K, H, W, 3]``, RGB on the 0-255 scale (unbounded for pixel methods).
      pictures: ``uint8[N, K, H, W, 3]``, the pixels deprocessed in the method's style.
      activations: ``float32[N]``, each objective's value on its final images (no transforms), in
        float32: the achieved activation that ranks filters.
      frames: ``uint8[F, N, K, H, W, 3]`` pictures every ``frame_every`` steps, or None.
    """

    pixels: jax.Array
    pictures: np.ndarray
    activations: np.ndarray
    frames: np.ndarray | None

    @property
    def dead(self) -> np.ndarray:
        """``bool[N]``: objectives that stayed at or below zero (dead filters, for a channel objective)."""
        return self.activations <= 0.0


def check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """``size`` (``H`` or ``(H, W)``) as ``(height, width)``, each a whole number of at least 1."""
    try:
        height, width = (size, size) if isinstance(size, int) else tuple(size)
    except (TypeError, ValueError):
        raise SettingError(f"size must be H or (H, W), got {size!r}") from None
    return check_count(height, "the height"), check_count(width, "the width")


def check_method_size(network: Network, method: Method, layer: str, height: int, width: int) -> None:
    """:func:`filterviz.checks.check_image_size` for ``method``: every octave stage must be large enough
    for ``layer``, and the images of one objective (its copies included) must fit the device."""
    copies = method.images_per_filter * method.transform_copies
    check_image_size(network, layer, height, width, copies=copies)
    if method.octaves is not None:
        smallest = method.octaves.sizes(height, width)[0]
        minimum = network.minimum_size(layer)
        if min(smallest) < minimum:
            raise SettingError(
                f"the first of {method.octaves.stages} octave stages shrinks {height}x{width} to "
                f"{smallest[0]}x{smallest[1]}, too small for {layer} (at least {minimum}x{minimum}); use "
                "fewer stages, a smaller scale or a larger image"
            )


def check_start(start: object, count: int) -> jax.Array:
    """A start image, ``[H, W, 3]`` (shared) or ``[count, H, W, 3]`` (one per objective), as float32,
    finite; else :class:`ImageError`."""
    try:
        shape = tuple(np.shape(start))
    except (TypeError, ValueError):
        shape = ()
    shared = len(shape) == 3 and shape[-1] == 3
    if not (shared or (len(shape) == 4 and shape[-1] == 3 and shape[0] == count)):
        raise ImageError(
            None, f"start image must be [H, W, 3] or [{count}, H, W, 3] (one per objective), got {shape}"
        )
    try:
        array = jnp.asarray(start, jnp.float32)
    except (TypeError, ValueError):
        raise ImageError(None, f"start image must be numbers, got {type(start).__name__}") from None
    check_finite(array, "the start image")
    return array


class _Plan(NamedTuple):
    network: Network
    method: Method
    objective: Objective
    count: int
    size: tuple[int, int]
    start: jax.Array | None
    keys: jax.Array
    chunk: int
    frame_every: int | None


def _plan(
    params: Params,
    objective: Objective,
    network: Network | str,
    method: str | Method,
    size: int | tuple[int, int] | None,
    seed: int,
    keys: jax.Array | None,
    start: np.ndarray | jax.Array | None,
    batch_size: int | None,
    frame_every: int | None,
    settings: dict[str, Any],
) -> _Plan:
    # Every check, before any work.
    network = get_network(network)
    method = get_method(method, **settings)
    if not isinstance(objective, Objective):
        raise SettingError(
            f"objective must be an Objective (channel(...), neuron(...) ...), got {objective!r}"
        )
    objective.check(network)
    count = objective.batch_size() or 1
    if start is not None:
        if not isinstance(method.parameterization, Pixels):
            raise SettingError(f"a start image needs a pixel method; {method.name} optimises a spectrum")
        start = check_start(start, count)
    if size is None:
        height, width = start.shape[-3:-1] if start is not None else (DEFAULT_SIZE, DEFAULT_SIZE)
    else:
        height, width = check_size(size)
    if start is not None and (height, width) != start.shape[-3:-1]:
        start = _resize(start.reshape(-1, *start.shape[-3:]), (height, width)).reshape(
            *start.shape[:-3], height, width, 3
        )
    if frame_every is not None and not 1 <= check_count(frame_every, "frame_every") <= max(1, method.steps):
        raise SettingError(f"frame_every must be between 1 and steps ({method.steps}), got {frame_every}")
    if batch_size is not None:
        check_count(batch_size, "batch_size")
    if keys is None:
        keys = filter_keys(check_seed(seed), np.arange(count))
    elif len(keys) != count:
        raise SettingError(f"{len(keys)} keys for {count} objectives")
    deepest = network.sorted(objective.layers)[-1]
    per_image = method.images_per_filter * method.transform_copies
    check_method_size(network, method, deepest, height, width)
    objective.check_positions(network, height, width)
    chunk = batch_size or max(1, default_batch_size(network, deepest, height, width) // per_image)
    return _Plan(
        network, method, objective, count, (height, width), start, keys, min(chunk, count), frame_every
    )


def _execute(
    params: Params, plan: _Plan, *, measure: bool, progress: bool | None
) -> tuple[jax.Array, jax.Array, list[jax.Array]]:
    # The chunks, dispatched one after another (JAX queues them), with a progress bar when watched.
    objective, method, count = plan.objective, plan.method, plan.count
    program_method, learning_rate = method.split_rate()  # the rate is traced: one program for all
    batched = objective.batch_size() is not None
    per_objective = plan.start is not None and plan.start.ndim == 4
    pixels, achieved, frames = [], [], []
    stages = method.octaves.stages if method.octaves else 1
    kind = "filter" if all(term.kind == "channel" for term in objective.terms) else "objective"
    title = f"{method.name} on {', '.join(objective.layers)}, {count_of(count, kind)}"
    with Progress(count * method.steps * stages, "step", title, enabled=wanted(progress)) as bar:
        report = StepReport(advance) if bar.enabled else None
        for rows, padded in padded_chunks(count, plan.chunk):
            part = objective.take(padded) if batched else _broadcast(objective, plan.chunk)
            result = render_batch(
                plan.network,
                params,
                part,
                plan.start[padded] if per_objective else plan.start,
                plan.keys[padded],
                method=program_method,
                size=plan.size,
                frame_every=plan.frame_every,
                report=report,
                measure=measure,
                learning_rate=learning_rate,
            )
            pixels.append(result[0][: len(rows)])
            achieved.append(result[1][: len(rows)])
            if result[2] is not None:
                frames.append(result[2][: len(rows)])
        pixels_all = pixels[0] if len(pixels) == 1 else jnp.concatenate(pixels)
        if bar.enabled:
            pixels_all.block_until_ready()  # the bar closes once the device has reported every step
    return pixels_all, jnp.concatenate(achieved), frames


def render(
    params: Params,
    objective: Objective,
    *,
    network: Network | str = "vgg16",
    method: str | Method = "lucid",
    size: int | tuple[int, int] | None = None,
    seed: int = 0,
    keys: jax.Array | None = None,
    start: np.ndarray | jax.Array | None = None,
    batch_size: int | None = None,
    frame_every: int | None = None,
    progress: bool | None = None,
    **settings: Any,
) -> Rendering:
    """Optimise images that maximise ``objective``: one set of K images per objective of its batch.

    Args:
      params: the network's parameters (:func:`filterviz.load_weights`).
      objective: e.g. ``channel("block4_conv1", range(16))`` (16 objectives), ``neuron(...)``,
        ``channel(...) + 100 * diversity(...)``, :func:`filterviz.objective` of your own.
      network: ``"vgg16"`` (default), ``"vgg19"``, ``"resnet50"``, or a network from
        :func:`filterviz.from_keras` / :func:`filterviz.from_flax`.
      method: a preset name (``notebook``, ``lucid``, ``maco``, ``octaves``) or a :class:`Method`.
      size: ``H`` or ``(H, W)`` of the result; default 128, or the ``start`` image's size.
      seed: PRNG seed; objective ``n`` uses ``fold_in(key(seed), n)`` unless ``keys`` are given.
      keys: one PRNG key per objective, e.g. :func:`filter_keys` to match a sweep.
      start: start pixels (0-255 RGB, e.g. a photo), ``[H, W, 3]`` shared or ``[N, H, W, 3]`` one per
        objective; pixel methods only.
      batch_size: objectives per compiled chunk (default from the device's memory).
      frame_every: also return the pictures every so many steps (for :func:`filterviz.save_gif`).
      progress: show a bar of the steps done, rate and time left (default: on a terminal or in a
        notebook, not in CI; see :mod:`filterviz.progress`).
      **settings: any :class:`Method` field, replacing the preset's (``steps=64``, ``precision=...``).

    Returns:
      A :class:`Rendering`: pixels, pictures, achieved activations, frames.

    Raises:
      SettingError: a setting that cannot work; ImageError: a start image of the wrong shape;
      UnknownLayerError, FilterIndexError: an objective that does not fit the network.

    >>> import jax, filterviz
    >>> params = filterviz.network("vgg16").init(jax.random.key(0))
    >>> result = filterviz.render(params, filterviz.channel("block1_conv1", [0, 1]), size=32, steps=2)
    >>> result.pictures.shape, result.activations.shape
    ((2, 1, 32, 32, 3), (2,))
    """
    plan = _plan(
        params, objective, network, method, size, seed, keys, start, batch_size, frame_every, settings
    )
    pixels, achieved, frames = _execute(params, plan, measure=True, progress=progress)
    frames_all = None
    if frames:
        frames_all = plan.method.to_pictures(
            np.moveaxis(np.concatenate([np.asarray(f) for f in frames]), 1, 0)
        )
    return Rendering(pixels, plan.method.to_pictures(pixels), np.asarray(achieved), frames_all)


def render_pixels(
    params: Params,
    objective: Objective,
    *,
    network: Network | str = "vgg16",
    method: str | Method = "lucid",
    start: np.ndarray | jax.Array | None = None,
    size: int | tuple[int, int] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> jax.Array:
    """:func:`render`'s pixels ``float32[N, K, H, W, 3]`` alone: nothing measured, no pictures made, the
    result left on the device (the path of :func:`filterviz.ascend`)."""
    plan = _plan(params, objective, network, method, size, seed, None, start, batch_size, None, {})
    return _execute(params, plan, measure=False, progress=progress)[0]


def _broadcast(objective: Objective, count: int) -> Objective:
    # An unbatched objective rendered `count` times (different keys): give every leaf a batch axis.
    return jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (count, *np.shape(leaf))), objective)
