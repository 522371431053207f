"""Feature-visualisation methods: parameterization, preprocessing, transforms, optimizer, octaves.

A :class:`Method` is a frozen dataclass, so it is static under ``jit``: one compiled program per method,
objective structure and image size, vmapped over a batch of objectives (e.g. every filter of a layer,
whose indices are traced). The core, :func:`render_one`, optimises the K images of one objective::

    state = AscentState(raw, optimizer_state, key)          # carried through lax.fori_loop
    each step:  pixels  = parameterization.to_pixels(raw)    # float32[K, H, W, 3], 0-255
                copies  = transforms(key_k, pixels)          # K * copies random views
                value   = objective(network(preprocess(copies)))
                raw    += optimizer(gradient of value)

Presets (:data:`METHODS`, see :func:`get_method`):

``notebook``  the classic Keras notebook: pixels, raw 0-255 input, no transforms, 20 steps of
              ``step_size * g / (rms(g) + 1e-5)``; pictures deprocessed to std 0.1.
``lucid``     Lucid's ``render_vis`` defaults: Fourier image (sd 0.01, 1/f, decorrelated colour,
              sigmoid), ``standard_transforms``, Adam(0.05), 512 steps, redirected ReLU gradients;
              VGG's own caffe preprocessing.
``maco``      MaCo: fixed natural-image magnitude, optimised phase, NAdam(1.0), random crops with
              noise (6 per step), 256 steps; caffe preprocessing.
``octaves``   the later Keras example (conv_filter_visualization.py): uniform noise 128 ± 10 at
              1/1.2^9 of the size, 15 steps of ``g / (rms(g) + 1e-7)`` per stage, 9 stages growing the
              image 1.2x between them through its uint8 picture, pictures deprocessed to std 0.25.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from filterviz.ascent import (
    StepReport,
    check_count,
    check_image_size,
    check_seed,
    check_step_size,
    compute_dtype,
    default_batch_size,
    matmul_precision,
    minimum_size,
    padded_chunks,
    prepare_params,
    run_steps,
)
from filterviz.errors import ImageError, SettingError
from filterviz.images import as_image, check_finite, clip_image
from filterviz.model import Params, forward
from filterviz.objectives import Objective, channel
from filterviz.param import Fourier, Maco, Parameterization, Pixels, check_preprocessing, preprocess
from filterviz.progress import Progress, advance, count_of, wanted
from filterviz.transforms import STANDARD, Noise, RandomCrop, Transform, compose

# ----------------------------------------------------------------------------------------------------
# Optimizers


def normalized_gradient(step_size: float, epsilon: float = 1e-5) -> optax.GradientTransformation:
    """The notebook's step as an optax transformation: ``-step_size * g / (rms(g) + epsilon)``.

    Like every optax optimizer it descends, so it is given the gradient of minus the objective.
    """

    def init(params: Any) -> optax.EmptyState:
        return optax.EmptyState()

    def update(updates: Any, state: optax.EmptyState, params: Any = None) -> tuple[Any, optax.EmptyState]:
        def scale(gradient: jax.Array) -> jax.Array:
            rms = jnp.sqrt(jnp.mean(jnp.square(gradient)))
            return -step_size * gradient / (rms + epsilon)

        return jax.tree.map(scale, updates), state

    return optax.GradientTransformation(init, update)


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """An optimizer by name, hashable so that equal settings reuse one compiled program.

    ``name`` is ``"normalized"`` (the notebook's RMS-normalised step, ``options`` may set ``epsilon``) or
    the name of any optax optimizer taking a learning rate first (``"adam"``, ``"nadam"``, ``"sgd"``,
    ``"lion"`` ...), called as ``getattr(optax, name)(learning_rate, **dict(options))``.
    """

    name: str
    learning_rate: float
    options: tuple[tuple[str, Any], ...] = ()

    def build(self) -> optax.GradientTransformation:
        check_step_size(self.learning_rate, f"the learning rate of {self.name!r}")
        if not isinstance(self.name, str):
            raise SettingError(f"an optimizer's name must be a string, got {self.name!r}")
        if self.name == "normalized":
            return normalized_gradient(self.learning_rate, **dict(self.options))
        factory = getattr(optax, self.name, None)
        if not callable(factory) or self.name.startswith("_"):
            raise SettingError(
                f"unknown optimizer {self.name!r}: use 'normalized' or an optax optimizer name"
            )
        try:
            built = factory(self.learning_rate, **dict(self.options))
        except (TypeError, ValueError) as error:
            raise SettingError(f"optimizer {self.name!r} does not take these settings ({error})") from None
        if not isinstance(built, optax.GradientTransformation):
            raise SettingError(f"optax.{self.name} is not an optimizer")
        return built


# ----------------------------------------------------------------------------------------------------
# Methods and presets


@dataclasses.dataclass(frozen=True)
class Octaves:
    """Multi-scale ascent: ``stages`` ascents on an image grown ``scale`` times between them.

    The stages run at ``size / scale**k`` for k = stages - 1 ... 0 when ``last_at_full_size`` (deep
    dream), or k = stages ... 1 followed by a last upscale to ``size`` (the Keras filter example).
    ``requantize`` passes the image through its uint8 picture (std 0.25) at each upscale and back, as the
    Keras example does; ``reinject_detail`` adds back the detail a photo start lost by shrinking
    (deep dream).
    """

    stages: int = 9
    scale: float = 1.2
    last_at_full_size: bool = False
    requantize: bool = True
    reinject_detail: bool = False

    def sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """The ``(height, width)`` of each stage's ascent, smallest first."""
        offset = 0 if self.last_at_full_size else 1
        powers = [self.scale ** (k + offset) for k in reversed(range(self.stages))]
        return [(int(height / p), int(width / p)) for p in powers]


PICTURE_STYLES = ("notebook", "keras", "clip")
DEFAULT_SIZE = 128
"""Height and width of :func:`render`'s pictures when neither ``size`` nor a start image gives them."""


@dataclasses.dataclass(frozen=True)
class Method:
    """Every knob of a feature-visualisation run; start from a preset with :func:`get_method`.

    Attributes:
      name: the preset this came from (recorded in sweeps).
      parameterization: :class:`~filterviz.param.Pixels`, :class:`~filterviz.param.Fourier` or
        :class:`~filterviz.param.Maco`.
      preprocessing: ``"raw"`` or ``"caffe"`` (see :mod:`filterviz.param`).
      transforms: applied in order to each image at each step (see :mod:`filterviz.transforms`).
      transform_copies: random views of each image per step (MaCo's crops per step).
      optimizer: an :class:`Optimizer`, or any ``optax.GradientTransformation`` (compiled per object).
      steps: optimisation steps (per stage, with octaves).
      images_per_filter: K, images optimised together per objective (for diversity).
      octaves: an :class:`Octaves`, or None for one stage at the full size (pixel methods only).
      picture: how pixels become ``uint8``: ``"notebook"`` (std 0.1), ``"keras"`` (std 0.25), ``"clip"``.
      redirect_relu: Lucid's ReLU gradient override (:func:`filterviz.model.redirected_relu`), which
        lets a filter that is off everywhere on the start image turn on.
      precision: ``"float32"``, ``"tf32"`` or ``"bfloat16"``, as :func:`filterviz.ascend`.
    """

    name: str = "custom"
    parameterization: Parameterization = Pixels()  # noqa: RUF009 (frozen, so sharing one is safe)
    preprocessing: str = "raw"
    transforms: tuple[Transform, ...] = ()
    transform_copies: int = 1
    optimizer: Optimizer | optax.GradientTransformation = Optimizer("normalized", 1.0)
    steps: int = 20
    images_per_filter: int = 1
    octaves: Octaves | None = None
    picture: str = "notebook"
    redirect_relu: bool = False
    precision: str = "float32"

    def check(self) -> Method:
        """This method, or :class:`SettingError` naming the first setting that cannot work."""
        check_preprocessing(self.preprocessing)
        compute_dtype(self.precision)
        check_count(self.steps, "steps", minimum=0)
        check_count(self.images_per_filter, "images_per_filter")
        check_count(self.transform_copies, "transform_copies")
        if self.picture not in PICTURE_STYLES:
            raise SettingError(
                f"unknown picture style {self.picture!r}; choose one of {', '.join(PICTURE_STYLES)}"
            )
        if self.octaves is not None and not isinstance(self.parameterization, Pixels):
            raise SettingError("octaves grow a pixel image: use them with Pixels()")
        if self.octaves is not None:
            check_count(self.octaves.stages, "octave stages")
            if not (isinstance(self.octaves.scale, int | float) and 1 < self.octaves.scale < float("inf")):
                raise SettingError(f"octaves need a finite scale above 1, got {self.octaves.scale!r}")
        if isinstance(self.optimizer, Optimizer):
            self.optimizer.build()
        return self

    def to_pictures(self, pixels: jax.Array | np.ndarray) -> np.ndarray:
        """``float32[..., H, W, 3]`` pixels as ``uint8`` pictures, in this method's style."""
        if self.picture == "clip":
            return clip_image(pixels)
        return as_image(pixels, 0.25 if self.picture == "keras" else 0.1)

    def describe(self) -> dict[str, Any]:
        """Every setting as JSON-ready values (for a sweep's settings file)."""
        described = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            described[field.name] = repr(value) if not isinstance(value, str | int | float) else value
        return described

    def _optimizer(self) -> optax.GradientTransformation:
        return self.optimizer.build() if isinstance(self.optimizer, Optimizer) else self.optimizer


METHODS: dict[str, Method] = {
    "notebook": Method(name="notebook"),
    "lucid": Method(
        name="lucid",
        parameterization=Fourier(sd=0.01, decay_power=1.0, decorrelate=True),
        preprocessing="caffe",
        transforms=STANDARD,
        optimizer=Optimizer("adam", 0.05),
        steps=512,
        picture="clip",
        redirect_relu=True,
    ),
    "maco": Method(
        name="maco",
        parameterization=Maco(phase_sd=1.0, magnitude_power=1.0),
        preprocessing="caffe",
        transforms=(RandomCrop(box=(0.5, 0.9), centre_sd=0.15), Noise(std=2.55)),
        transform_copies=6,
        optimizer=Optimizer("nadam", 1.0),
        steps=256,
        picture="clip",
    ),
    "octaves": Method(
        name="octaves",
        parameterization=Pixels(mean=128.0, std=10.0, uniform=True),
        optimizer=Optimizer("normalized", 1.0, (("epsilon", 1e-7),)),
        steps=15,
        octaves=Octaves(stages=9, scale=1.2),
        picture="keras",
    ),
}
"""The presets; :func:`get_method` returns one with any setting replaced."""


def get_method(method: str | Method = "lucid", **settings: Any) -> Method:
    """A preset by name (or a :class:`Method`) with ``settings`` replaced, checked.

    >>> get_method("lucid", steps=64).steps
    64
    """
    if isinstance(method, str):
        if method not in METHODS:
            raise SettingError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        method = METHODS[method]
    try:
        return dataclasses.replace(method, **settings).check()
    except TypeError as error:
        raise SettingError(f"bad method setting: {error}") from None


# ----------------------------------------------------------------------------------------------------
# The core: one objective, its K images.


class AscentState(NamedTuple):
    """What the optimisation loop carries: the raw variables, the optimizer's state and the PRNG key."""

    raw: jax.Array
    optimizer_state: Any
    key: jax.Array


def objective_value(
    prepared: Params, objective: Objective, method: Method, pixels: jax.Array, key: jax.Array | None
) -> jax.Array:
    """``objective`` on ``pixels float32[K, H, W, 3]``, seen through the method's transforms when ``key``
    is given (``transform_copies`` random views each) and its preprocessing; one forward pass."""
    if key is not None and method.transforms:
        copies = jnp.repeat(pixels, method.transform_copies, axis=0)
        keys = jax.random.split(key, copies.shape[0])
        pixels = jax.vmap(compose(method.transforms))(keys, copies)
    inputs = preprocess(pixels, method.preprocessing).astype(compute_dtype(method.precision))
    return objective(forward(prepared, inputs, objective.layers, redirect_relu=method.redirect_relu))


def _optimise(
    prepared: Params,
    objective: Objective,
    method: Method,
    raw: jax.Array,
    key: jax.Array,
    size: tuple[int, int],
    frame_every: int | None,
    report: StepReport | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """``method.steps`` steps from ``raw``; returns the final raw and, with ``frame_every``, the pixels
    after every ``frame_every`` steps ``float32[F, K, H, W, 3]``. ``report``: see :func:`run_steps`."""
    optimizer = method._optimizer()
    height, width = size

    def loss(current: jax.Array, step_key: jax.Array) -> jax.Array:
        pixels = method.parameterization.to_pixels(current, height, width)
        return -objective_value(prepared, objective, method, pixels, step_key)

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
    prepared: Params,
    objective: Objective,
    start: jax.Array | None,
    key: jax.Array,
    *,
    method: Method,
    size: tuple[int, int],
    frame_every: int | None = None,
    report: StepReport | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """Optimise the K images of one (unbatched) ``objective``; the pure core, vmapped by :func:`render`.

    Args:
      prepared: parameters from :func:`filterviz.ascent.prepare_params` (flipped kernels, cast).
      objective: one objective (no batch axis on its arguments).
      start: ``float32[H, W, 3]`` start pixels (pixel methods only), or None to draw from ``key``.
      key: PRNG key of this objective: its start and every step's transforms.
      method: the settings, static.
      size: ``(H, W)`` of the result.
      frame_every: also return the pixels every so many steps.
      report: have the loops tell the host how many steps they have done (:func:`run_steps`).

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
                prepared, objective, method, raw, jax.random.fold_in(key, index), stage, frame_every, report
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


# ----------------------------------------------------------------------------------------------------
# The jitted, chunked entry point.


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


def render_and_measure(
    params: Params,
    objective: Objective,
    start: jax.Array | None,
    keys: jax.Array,
    *,
    method: Method,
    size: tuple[int, int],
    frame_every: int | None = None,
    report: StepReport | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """:func:`render_one` vmapped over a batched ``objective`` and ``keys [B]``, each objective then
    measured on its final images in float32. Returns ``(pixels [B, K, H, W, 3], activations [B],
    frames)``. Not jitted: :func:`render_batch` jits it, sweeps wrap it in their sharded jit."""
    prepared = prepare_params(params, method.precision)
    measure = dataclasses.replace(method, precision="float32")  # achieved values always in float32

    def one(objective: Objective, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        pixels, frames = render_one(
            prepared, objective, start, key, method=method, size=size, frame_every=frame_every, report=report
        )
        with matmul_precision("float32"):
            achieved = objective_value(params, objective, measure, pixels, None)
        return pixels, achieved, frames

    return jax.vmap(one, in_axes=(objective.batch_axes(), 0))(objective, keys)


render_batch = jax.jit(render_and_measure, static_argnames=("method", "size", "frame_every", "report"))
""":func:`render_and_measure`, jitted: one program per method, objective structure and size."""


def render_filters(
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
    pixels, achieved, _ = render_and_measure(params, objective, start, keys, method=method, size=size)
    return pixels[:, 0], achieved


def filter_keys(seed: int, filter_indices: Sequence[int] | np.ndarray) -> jax.Array:
    """The PRNG keys :func:`render_filters` gives these filters: ``fold_in(key(seed), index)``."""
    base = jax.random.key(seed)
    return jax.vmap(lambda index: jax.random.fold_in(base, index))(jnp.asarray(filter_indices, jnp.int32))


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    try:
        height, width = (size, size) if isinstance(size, int) else tuple(size)
    except (TypeError, ValueError):
        raise SettingError(f"size must be H or (H, W), got {size!r}") from None
    return check_count(height, "the height"), check_count(width, "the width")


def check_method_size(method: Method, layer: str, height: int, width: int) -> None:
    """:func:`filterviz.ascent.check_image_size` for ``method``: every octave stage must be large enough
    for ``layer``, and the images of one objective (its copies included) must fit the device."""
    check_image_size(layer, height, width, copies=method.images_per_filter * method.transform_copies)
    if method.octaves is not None:
        smallest = method.octaves.sizes(height, width)[0]
        minimum = minimum_size(layer)
        if min(smallest) < minimum:
            raise SettingError(
                f"the first of {method.octaves.stages} octave stages shrinks {height}x{width} to "
                f"{smallest[0]}x{smallest[1]}, too small for {layer} (at least {minimum}x{minimum}); use "
                "fewer stages, a smaller scale or a larger image"
            )


def render(
    params: Params,
    objective: Objective,
    *,
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
      params: VGG16 parameters from :func:`filterviz.load_weights`.
      objective: e.g. ``channel("block4_conv1", range(16))`` (16 objectives), ``neuron(...)``,
        ``channel(...) + 100 * diversity(...)``; see :mod:`filterviz.objectives`.
      method: a preset name (``notebook``, ``lucid``, ``maco``, ``octaves``) or a :class:`Method`.
      size: ``H`` or ``(H, W)`` of the result; default 128, or the ``start`` image's size.
      seed: PRNG seed; objective ``n`` uses ``fold_in(key(seed), n)`` unless ``keys`` are given.
      keys: one PRNG key per objective, e.g. :func:`filter_keys` to match a sweep.
      start: ``float32[H, W, 3]`` start pixels (0-255 RGB, e.g. a photo), pixel methods only.
      batch_size: objectives per compiled chunk (default from the device's memory).
      frame_every: also return the pictures every so many steps (for :func:`filterviz.save_gif`).
      progress: show a bar of the steps done, rate and time left (default: on a terminal or in a
        notebook, not in CI; see :mod:`filterviz.progress`).
      **settings: any :class:`Method` field, replacing the preset's (``steps=64``, ``precision=...``).

    Returns:
      A :class:`Rendering`: pixels, pictures, achieved activations, frames.

    Raises:
      SettingError: a setting that cannot work; ImageError: a start image of the wrong shape.

    >>> import jax, filterviz
    >>> params = filterviz.init_params(jax.random.key(0))
    >>> result = filterviz.render(params, filterviz.channel("block1_conv1", [0, 1]), size=32, steps=2)
    >>> result.pictures.shape, result.activations.shape
    ((2, 1, 32, 32, 3), (2,))
    """
    method = get_method(method, **settings)
    if not isinstance(objective, Objective):
        raise SettingError(
            f"objective must be an Objective (channel(...), neuron(...) ...), got {objective!r}"
        )
    count = objective.batch_size() or 1
    if start is not None:
        if not isinstance(method.parameterization, Pixels):
            raise SettingError(f"a start image needs a pixel method; {method.name} optimises a spectrum")
        try:
            start = jnp.asarray(start, jnp.float32)
        except (TypeError, ValueError):
            raise ImageError(None, f"start image must be numbers, got {type(start).__name__}") from None
        if start.ndim != 3 or start.shape[-1] != 3:
            raise ImageError(None, f"start image must be [H, W, 3], got {tuple(start.shape)}")
        check_finite(start, "the start image")
    if size is None:
        height, width = start.shape[:2] if start is not None else (DEFAULT_SIZE, DEFAULT_SIZE)
    else:
        height, width = _size(size)
    if start is not None and (height, width) != start.shape[:2]:
        start = _resize(start[None], (height, width))[0]
    if frame_every is not None and not 1 <= check_count(frame_every, "frame_every") <= max(1, method.steps):
        raise SettingError(f"frame_every must be between 1 and steps ({method.steps}), got {frame_every}")
    if batch_size is not None:
        check_count(batch_size, "batch_size")
    if keys is None:
        keys = filter_keys(check_seed(seed), np.arange(count))
    elif len(keys) != count:
        raise SettingError(f"{len(keys)} keys for {count} objectives")
    deepest = objective.layers[-1]
    per_image = method.images_per_filter * method.transform_copies
    check_method_size(method, deepest, height, width)
    objective.check_positions(height, width)
    chunk = batch_size or max(1, default_batch_size(deepest, height, width) // per_image)
    chunk = min(chunk, count)
    batched = objective.batch_size() is not None
    pixels, achieved, frames = [], [], []
    stages = method.octaves.stages if method.octaves else 1
    title = f"{method.name} on {', '.join(objective.layers)}, {count_of(count, 'objective')}"
    with Progress(count * method.steps * stages, "step", title, enabled=wanted(progress)) as bar:
        report = StepReport(advance) if bar.enabled else None
        for rows, padded in padded_chunks(count, chunk):
            part = objective.take(padded) if batched else _broadcast(objective, chunk)
            result = render_batch(
                params,
                part,
                start,
                keys[padded],
                method=method,
                size=(height, width),
                frame_every=frame_every,
                report=report,
            )
            pixels.append(result[0][: len(rows)])
            achieved.append(result[1][: len(rows)])
            if result[2] is not None:
                frames.append(result[2][: len(rows)])
        pixels_all = jnp.concatenate(pixels)
        if bar.enabled:
            pixels_all.block_until_ready()  # the bar closes once the device has reported every step
    frames_all = None
    if frames:
        frames_all = method.to_pictures(np.moveaxis(np.concatenate([np.asarray(f) for f in frames]), 1, 0))
    return Rendering(
        pixels_all, method.to_pictures(pixels_all), np.asarray(jnp.concatenate(achieved)), frames_all
    )


def _broadcast(objective: Objective, count: int) -> Objective:
    # An unbatched objective rendered `count` times (different keys): give every leaf a batch axis.
    return jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (count, *np.shape(leaf))), objective)
