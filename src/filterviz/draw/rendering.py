"""Rendering as users call it: :func:`render` checks every setting before any work, splits the
objectives into chunks sized from the device's memory, runs each through the engine's one compiled
program (:func:`filterviz.core.engine.render_batch`, or over every device of this process:
:mod:`filterviz.sharding`) and shows progress; :func:`render_pixels` is the same
without measuring or making pictures (the path of :func:`filterviz.ascend`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from filterviz.core import engine, segments
from filterviz.core.ascent_checks import (
    check_method_size,
    check_size,
    check_start,
    default_chunk,
    start_parameterization,
)
from filterviz.core.checks import check_count, check_params, check_seed, device_memory, padded_chunks
from filterviz.core.engine import Ascent, AscentState, Drawn, Tunables, filter_keys, resize_pixels
from filterviz.core.methods import DEFAULT_SIZE, Method, get_method
from filterviz.core.network import Network, Params
from filterviz.core.objectives import Objective
from filterviz.errors import SettingError
from filterviz.io.programs import cache_folder as program_cache_folder
from filterviz.io.programs import kept
from filterviz.io.spectrum import resolve_spectrum
from filterviz.networks import get_network
from filterviz.progress import Progress, count_of, shared_bar, wanted
from filterviz.sharding import (
    advance_sharded,
    begin_sharded,
    chunk_size,
    finish_sharded,
    local_mesh,
    next_stage_sharded,
    render_sharded,
)

# The engine's programs, each kept between sessions in filterviz's own store (filterviz.io.programs).
render_batch = kept(engine.render_batch, ("ascent",))
begin_batch = kept(segments.begin_batch, ("ascent",))
advance_batch = kept(segments.advance_batch, ("ascent", "stage", "frame"))
next_stage_batch = kept(segments.next_stage_batch, ("ascent", "stage"))
finish_batch = kept(segments.finish_batch, ("ascent",))


class Rendering(NamedTuple):
    """What :func:`render` returns, for N objectives (e.g. N filters), K images each.

    Attributes:
      pixels: ``float32[N, K, H, W, 3]``, RGB on the 0-255 scale (unbounded for pixel methods).
      pictures: ``uint8[N, K, H, W, 3]``, the pixels deprocessed in the method's style.
      activations: ``float32[N]``, each objective's value on its final images (no transforms), in
        float32: the achieved activation that ranks filters.
      frames: ``uint8[F, N, K, H, W, 3]`` pictures every ``frame_every`` steps, or None.
      alpha: ``float32[N, K, H, W]`` transparency in [0, 1] for a method with ``alpha`` (MaCo's), else
        None; then ``pictures`` are RGBA, ``uint8[N, K, H, W, 4]``.
    """

    pixels: jax.Array
    pictures: np.ndarray
    activations: np.ndarray
    frames: np.ndarray | None
    alpha: np.ndarray | None = None

    @property
    def dead(self) -> np.ndarray:
        """``bool[N]``: objectives that stayed at or below zero (dead filters, for a channel objective)."""
        return self.activations <= 0.0


class _Plan(NamedTuple):
    # A checked rendering: the static settings of its one program, and what each chunk is fed.
    ascent: Ascent
    objective: Objective
    objectives: int
    start: jax.Array | None
    keys: jax.Array
    chunk: int
    learning_rate: float | None
    shown: bool  # a progress bar
    mesh: Mesh | None  # this process's devices the chunks are split over; None for one


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
    *,
    measure: bool,
    progress: bool | None,
) -> _Plan:
    # Every check, before any work.
    network = get_network(network)
    method = resolve_spectrum(get_method(method, **settings))
    if not isinstance(objective, Objective):
        raise SettingError(
            f"objective must be an Objective (channel(...), neuron(...) ...), got {objective!r}"
        )
    objective.check(network)
    check_params(network, params)
    count = objective.batch_size() or 1
    if start is not None:
        start_parameterization(method)
        start = check_start(start, count)
    if size is None:
        height, width = start.shape[-3:-1] if start is not None else (DEFAULT_SIZE, DEFAULT_SIZE)
    else:
        height, width = check_size(size)
    if start is not None and (height, width) != start.shape[-3:-1]:
        start = resize_pixels(start.reshape(-1, *start.shape[-3:]), (height, width)).reshape(
            *start.shape[:-3], height, width, 3
        )
    if frame_every is not None and not 1 <= check_count(frame_every, "frame_every") <= max(1, method.steps):
        raise SettingError(f"frame_every must be between 1 and steps ({method.steps}), got {frame_every}")
    if frame_every is not None:
        _check_frames_fit(method.steps // frame_every, count * method.images_per_filter, height, width)
    if batch_size is not None:
        check_count(batch_size, "batch_size")
    if keys is None:
        keys = filter_keys(check_seed(seed), np.arange(count))
    elif len(keys) != count:
        raise SettingError(f"{len(keys)} keys for {count} objectives")
    deepest = network.sorted(objective.layers)[-1]
    check_method_size(network, method, deepest, height, width)
    objective.check_positions(network, height, width)
    mesh = local_mesh(count)
    per_device = batch_size or default_chunk(network, method, deepest, height, width)
    chunk = chunk_size(per_device, count, 1 if mesh is None else mesh.size)
    program_method, learning_rate = method.split_rate()  # the rate is traced: one program for all
    ascent = Ascent(network, program_method, (height, width), frame_every, measure)
    # The objective's numbers kept on the host, where each chunk's rows are taken: an eager gather
    # would compile programs of its own before the first picture.
    objective = jax.tree.map(np.asarray, objective)
    return _Plan(ascent, objective, count, start, keys, chunk, learning_rate, wanted(progress), mesh)


def _check_frames_fit(frames: int, images: int, height: int, width: int) -> None:
    # The frames come back to the host as float32 and as pictures: they must fit its memory.
    per_frame = images * height * width * 3 * (4 + 1)
    need, available = frames * per_frame, device_memory()
    if need > available:
        largest = max(1, available // per_frame)
        raise SettingError(
            f"{frames:,} frames of {images:,} {height}x{width} images need about {need / 2**30:,.1f} GiB; "
            f"keep at most {largest:,} frames (a larger frame_every)"
        )


def _execute(
    params: Params, plan: _Plan
) -> tuple[list[jax.Array], np.ndarray, list[jax.Array], jax.Array | None]:
    # Every chunk through the engine, the bar counting its steps as the device finishes them.
    objective, method, count = plan.objective, plan.ascent.method, plan.objectives
    steps = method.steps * (method.octaves.stages if method.octaves else 1)  # per objective
    kind = "filter" if all(term.kind == "channel" for term in objective.terms) else "objective"
    layers = ", ".join(objective.layers)
    outer = shared_bar()  # a job's bar of steps (an atlas's icons), else one of this render's own
    own = f"{method.name} on {layers}, {count_of(count, kind)}"
    counting: contextlib.AbstractContextManager[Progress] = (
        contextlib.nullcontext(outer)
        if outer is not None
        else Progress(count * steps, "step", own, enabled=plan.shown)
    )
    with counting as bar:
        if bar.enabled:
            results = _draw_in_segments(params, plan, bar, layers)
        else:
            results = _draw_in_chunks(params, plan, bar, layers, steps)
    pixels = [drawn.pixels[:rows] for rows, drawn in results]
    frames = [drawn.frames[:rows] for rows, drawn in results if drawn.frames is not None]
    achieved = np.concatenate([np.asarray(drawn.activations)[:rows] for rows, drawn in results])
    alphas = [drawn.alpha[:rows] for rows, drawn in results if drawn.alpha is not None]
    alpha = jnp.concatenate(alphas) if alphas else None
    return pixels, achieved, frames, alpha


def _draw_in_chunks(
    params: Params, plan: _Plan, bar: Progress, layers: str, steps: int
) -> list[tuple[int, Drawn]]:
    # Every chunk dispatched whole (JAX queues them and returns), then the bar counts each one's steps as
    # the device finishes it.
    results: list[tuple[int, Drawn]] = []
    for index, (rows, padded) in enumerate(padded_chunks(plan.objectives, plan.chunk)):
        # The first call compiles the program, then dispatches its run; later ones only dispatch.
        first = _compiling(bar, plan.ascent.method.name, layers, first=True) if index == 0 else None
        with first or contextlib.nullcontext():
            results.append((len(rows), _dispatch(params, plan, padded)))
    for drawn_rows, drawn in results:
        with bar.waiting(f"drawing {layers}", after=2.0):
            jax.block_until_ready(drawn)
        bar.update(drawn_rows * steps)
    return results


def _draw_in_segments(params: Params, plan: _Plan, bar: Progress, layers: str) -> list[tuple[int, Drawn]]:
    # Each chunk's steps in segments of about SEGMENT_SECONDS, one queued behind the one running so the
    # device never waits for the host, the bar counting each as it ends.
    results: list[tuple[int, Drawn]] = []
    pace = [1]  # steps per segment: the first times one step, later ones last about SEGMENT_SECONDS
    for index, (rows, padded) in enumerate(padded_chunks(plan.objectives, plan.chunk)):
        part, start, keys = _chunk_inputs(plan, padded)
        frames: list[jax.Array] = []
        chunk = _segments(params, plan, part, start, keys, pace, frames)
        with _compiling(bar, plan.ascent.method.name, layers, first=index == 0):
            queued = deque([next(chunk)])
        ready_at = time.monotonic()
        while queued:
            for segment in itertools.islice(chunk, 2 - len(queued)):
                queued.append(segment)
            state, steps = queued.popleft()
            with bar.waiting(f"drawing {layers}", after=2.0):
                jax.block_until_ready(state.variables)
            now = time.monotonic()
            pace[0] = max(1, round(SEGMENT_SECONDS * steps / max(now - ready_at, 1e-6)))
            ready_at = now
            bar.update(len(rows) * steps)
        with bar.waiting(f"measuring {layers}", after=2.0):
            finish = finish_batch if plan.mesh is None else functools.partial(finish_sharded, mesh=plan.mesh)
            drawn = jax.block_until_ready(finish(plan.ascent, params, part, state, start))
        results.append((len(rows), drawn._replace(frames=jnp.stack(frames, axis=1) if frames else None)))
    return results


def _segments(
    params: Params,
    plan: _Plan,
    part: Objective,
    start: jax.Array | None,
    keys: jax.Array,
    pace: list[int],
    frames: list[jax.Array],
) -> Iterator[tuple[AscentState, int]]:
    # One chunk's ascent, dispatched a segment at a time as the caller asks (each `pace[0]` steps long
    # when asked, or `frame_every` with each frame's pixels appended to `frames`): the state after each,
    # and its steps. Octave stages follow one another.
    ascent, tunables, total = plan.ascent, Tunables(plan.learning_rate), plan.ascent.method.steps
    begin, advance, next_stage = begin_batch, advance_batch, next_stage_batch
    if plan.mesh is not None:  # the same programs, each device running its share of the objectives
        on_mesh = {"mesh": plan.mesh}
        begin = functools.partial(begin_sharded, **on_mesh)
        advance = functools.partial(advance_sharded, **on_mesh)
        next_stage = functools.partial(next_stage_sharded, **on_mesh)
    state, stage_keys = begin(ascent, start, keys, tunables)
    for stage in range(segments.stages(ascent)):
        if stage:
            state = next_stage(ascent, state, stage_keys, start, stage - 1, tunables)
        done, every = 0, ascent.frame_every or 0
        while True:  # once at least, so that even an ascent of no steps yields a state
            frame = 0 < every <= total - done
            steps = every if frame else min(every or pace[0], total - done)
            state = advance(ascent, params, part, state, np.int32(steps), tunables, stage, frame)
            if frame:
                state, pixels = state
                frames.append(pixels)
            done += steps
            yield state, steps
            if done >= total:
                break


@contextlib.contextmanager
def _compiling(bar: Progress, method: str, layers: str, *, first: bool) -> Iterator[None]:
    # A chunk's first call, which compiles its programs: the bar says so while it waits, and after the
    # first chunk's, says once a long compile is kept and counts its rate from then on.
    began = time.monotonic()
    with bar.waiting(f"compiling {method} for {layers}"):
        yield
    seconds = time.monotonic() - began
    if first:
        _say_once_compiled(bar, seconds)
    if first and seconds > 0.5:  # a compile: no part of the work's pace
        bar.rate_from_now()


SEGMENT_SECONDS = 1.0
"""How long each segment of a watched ascent runs: the bar moves this often (the host dispatches the next
segment while one runs, so the device does not wait)."""


def _chunk_inputs(plan: _Plan, padded: np.ndarray) -> tuple[Objective, jax.Array | None, jax.Array]:
    # One chunk of objectives (rows `padded`, the last repeated to fill it): its objective, start and keys.
    batched = plan.objective.batch_size() is not None
    part = plan.objective.take(padded) if batched else _broadcast(plan.objective, plan.chunk)
    start = plan.start
    if start is not None and start.ndim == 4:
        start = jax.device_put(np.asarray(start)[padded])
    return part, start, _key_rows(plan.keys, padded)


def _dispatch(params: Params, plan: _Plan, padded: np.ndarray) -> Drawn:
    # One chunk of objectives to the compiled program, whole.
    part, start, keys = _chunk_inputs(plan, padded)
    tunables = Tunables(plan.learning_rate)
    if plan.mesh is not None:
        return render_sharded(plan.ascent, params, part, start, keys, tunables, mesh=plan.mesh)
    return render_batch(plan.ascent, params, part, start, keys, tunables)


LONG_COMPILE_SECONDS = 10.0
"""A first call longer than this, watched, says once per process that later calls reuse the program."""
_said: list[bool] = []


def _say_once_compiled(bar: Progress, seconds: float) -> None:
    # One line, the first time a watched compile is long: the program is reused, and can be kept on disk.
    if seconds < LONG_COMPILE_SECONDS or _said or not bar.enabled:
        return
    _said.append(True)
    kept = getattr(jax.config, "jax_compilation_cache_dir", None) or program_cache_folder()
    later = f"kept in {kept} for later sessions" if kept else "FILTERVIZ_PROGRAM_CACHE is off"
    bar.note(f"filterviz: compiled in {seconds:.0f} s; calls with the same settings reuse it ({later})")


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
      batch_size: objectives per device per compiled chunk (default from the device's memory). With
        several devices in this process, each chunk is split over as many as it has objectives.
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
        params, objective, network, method, size, seed, keys, start, batch_size, frame_every, settings,
        measure=True, progress=progress,
    )  # fmt: skip
    chunks, achieved, frames, alpha = _execute(params, plan)
    pixels = chunks[0] if len(chunks) == 1 else jnp.concatenate(chunks)
    _check_finite(np.asarray(achieved))
    frames_all = None
    if frames:
        frames_all = plan.ascent.method.to_pictures(
            np.moveaxis(np.concatenate([np.asarray(f) for f in frames]), 1, 0)
        )
    alpha_map = None if alpha is None else np.asarray(alpha)
    pictures = plan.ascent.method.to_pictures(pixels, alpha_map)
    return Rendering(pixels, pictures, np.asarray(achieved), frames_all, alpha_map)


def _check_finite(achieved: np.ndarray) -> None:
    # A NaN or infinite objective means params or weights overflowed float32: the pictures mean nothing.
    broken = np.flatnonzero(~np.isfinite(achieved))
    if broken.size:
        raise SettingError(
            f"the objective came out {achieved[broken[0]]} for {broken.size} of {achieved.size} "
            "objectives: the params or the objective's weights overflow float32"
        )


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
    """The first of :func:`render`'s images of each objective, ``float32[N, H, W, 3]``, alone: nothing
    measured, no pictures made, the result left on the device (the path of :func:`filterviz.ascend`)."""
    plan = _plan(
        params, objective, network, method, size, seed, None, start, batch_size, None, {},
        measure=False, progress=progress,
    )  # fmt: skip
    return _first_images(_execute(params, plan)[0])


@jax.jit  # the chunks joined and each objective's first image taken by one program, not two eager ops
def _first_images(chunks: list[jax.Array]) -> jax.Array:
    return jnp.concatenate(chunks)[:, 0]


def _key_rows(keys: jax.Array, rows: np.ndarray) -> jax.Array:
    # Taken on the host, as every row of a chunk is: an eager gather compiles programs of its own
    # before the first picture.
    if not jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        return jax.device_put(np.asarray(keys)[rows])
    data = np.asarray(jax.random.key_data(keys))[rows]
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(keys))


def _broadcast(objective: Objective, count: int) -> Objective:
    # An unbatched objective rendered `count` times (different keys): give every leaf a batch axis.
    return jax.tree.map(lambda leaf: np.broadcast_to(leaf, (count, *np.shape(leaf))), objective)
