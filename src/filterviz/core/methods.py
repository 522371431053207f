"""Feature-visualisation methods: parameterization, preprocessing, transforms, optimizer, octaves.

A :class:`Method` is a frozen dataclass, so it is static under ``jit``: one compiled program per method,
objective structure and image size (see :mod:`filterviz.core.engine`, which runs them all).

Presets (:data:`METHODS`, see :func:`get_method`):

``notebook``  the classic Keras notebook: pixels, raw 0-255 input, no transforms, 20 steps of
              ``step_size * g / (rms(g) + 1e-5)``; pictures deprocessed to std 0.1.
``lucid``     Lucid's ``render_vis`` defaults: Fourier image (sd 0.01, 1/f, decorrelated colour,
              sigmoid), ``standard_transforms``, Adam(0.05), 512 steps, redirected ReLU gradients;
              the network's own preprocessing (caffe for VGG and ResNet); the picture's own scale,
              the cheapest and the strongest viewed at its own size. For pictures viewed both at
              their size and at 224: ``view=176, transforms=transforms.WIDE`` (BENCHMARKS.md).
``maco``      MaCo (Fel et al., NeurIPS 2023, as its authors' implementations run it): the published
              ImageNet magnitude spectrum, an optimised phase, pixels spanning ImageNet's mean
              +- 2.5 standard deviations (MaCo's ``values_range``; the picture clipped to 0-255),
              NAdam(1.0) with Keras' and PyTorch's momentum warm-up (:func:`scheduled_nadam`), 6
              crops per step of 25-30% of the side (centres N(0.5, 0.15)) viewed at 224 with noise,
              256 steps, and the transparency map (alpha); the network's own preprocessing. Best at
              ``size=512`` or more.
``octaves``   the later Keras example (conv_filter_visualization.py): uniform noise 128 ± 10 at
              1/1.2^9 of the size, 15 steps of ``g / (rms(g) + 1e-7)`` per stage, 9 stages growing the
              image 1.2x between them through its uint8 picture, pictures deprocessed to std 0.25.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from filterviz.core.checks import check_count, check_step_size, compute_dtype
from filterviz.core.network import PREPROCESSINGS, Network
from filterviz.core.parameterizations import Fourier, Maco, Parameterization, Pixels
from filterviz.core.pictures import as_image, clip_image
from filterviz.core.transforms import STANDARD, TRANSFORM_SETS, Noise, RandomCrop, Transform, View
from filterviz.errors import SettingError

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


class ScheduledNadamState(NamedTuple):
    steps: jax.Array  # steps taken
    momentum_product: jax.Array  # the product of every step's momentum so far
    first: Any  # the gradients' moving average
    second: Any  # the squared gradients' moving average


def scheduled_nadam(
    learning_rate: float | jax.Array,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    momentum_decay: float = 0.004,
) -> optax.GradientTransformation:
    """NAdam as Keras and PyTorch run it (Dozat 2016), the optimizer of Horama's MaCo (torch's NAdam):
    the momentum warms up, ``mu_t = b1 * (1 - 0.5 * 0.96 ** (momentum_decay * t))``, from b1 / 2 (0.45)
    to 0.52 by step 1,000, where ``optax.nadam`` keeps ``b1`` from the first step."""

    def momentum(step: jax.Array) -> jax.Array:
        return b1 * (1.0 - 0.5 * 0.96 ** (momentum_decay * step))

    def init(params: Any) -> ScheduledNadamState:
        zeros = jax.tree.map(jnp.zeros_like, params)
        return ScheduledNadamState(jnp.zeros((), jnp.int32), jnp.ones((), jnp.float32), zeros, zeros)

    def update(gradients: Any, state: ScheduledNadamState, params: Any = None):
        step = (state.steps + 1).astype(jnp.float32)
        now, following = momentum(step), momentum(step + 1.0)
        product = state.momentum_product * now
        first = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.first, gradients)
        second = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.second, gradients)

        def step_of(g, m, v):
            look_ahead = following * m / (1 - product * following) + (1 - now) * g / (1 - product)
            return -learning_rate * look_ahead / (jnp.sqrt(v / (1 - b2**step)) + eps)

        updates = jax.tree.map(step_of, gradients, first, second)
        return updates, ScheduledNadamState(state.steps + 1, product, first, second)

    return optax.GradientTransformation(init, update)


OWN_OPTIMIZERS = {"normalized": normalized_gradient, "scheduled_nadam": scheduled_nadam}


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """An optimizer by name, hashable so that equal settings reuse one compiled program.

    ``name`` is ``"normalized"`` (the notebook's RMS-normalised step, ``options`` may set ``epsilon``),
    ``"scheduled_nadam"`` (:func:`scheduled_nadam`, NAdam as Keras and PyTorch run it) or the name of
    any optax optimizer taking a learning rate first (``"adam"``, ``"nadam"``, ``"sgd"``,
    ``"lion"`` ...), called as ``getattr(optax, name)(learning_rate, **dict(options))``.
    """

    name: str
    learning_rate: float
    options: tuple[tuple[str, Any], ...] = ()

    def build(self, learning_rate: float | jax.Array | None = None) -> optax.GradientTransformation:
        """The optax transformation; ``learning_rate`` (e.g. a traced scalar) replaces the field's."""
        check_step_size(self.learning_rate, f"the learning rate of {self.name!r}")
        if not isinstance(self.name, str):
            raise SettingError(f"an optimizer's name must be a string, got {self.name!r}")
        rate = self.learning_rate if learning_rate is None else learning_rate
        factory = OWN_OPTIMIZERS.get(self.name) or getattr(optax, self.name, None)
        if not callable(factory) or self.name.startswith("_"):
            raise SettingError(
                f"unknown optimizer {self.name!r}: use one of {', '.join(OWN_OPTIMIZERS)} or an optax "
                "optimizer name"
            )
        options = dict(self.options)
        try:
            if learning_rate is None or self.name in OWN_OPTIMIZERS:  # filterviz's own take a traced rate
                built = factory(rate, **options)
            else:  # a rate known only when the program runs: optax's way to feed a hyperparameter
                built = optax.inject_hyperparams(lambda learning_rate: factory(learning_rate, **options))(
                    learning_rate=rate
                )
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


NOTEBOOK_STEPS = 20
NOTEBOOK_STEP_SIZE = 1.0
"""The notebook's ascent: 20 steps of 1.0 times the RMS-normalised gradient (the one home of both)."""
PICTURE_STYLES = ("notebook", "keras", "clip")
DEFAULT_SIZE = 128
"""Height and width of :func:`render`'s pictures when neither ``size`` nor a start image gives them."""


@dataclasses.dataclass(frozen=True)
class Method:
    """Every knob of a feature-visualisation run; start from a preset with :func:`get_method`.

    Attributes:
      name: the preset this came from (recorded in sweeps).
      parameterization: :class:`~filterviz.core.parameterizations.Pixels`,
        :class:`~filterviz.core.parameterizations.Fourier` or :class:`~filterviz.core.parameterizations.Maco`.
      preprocessing: ``"network"`` (the network's own convention), ``"raw"``, ``"caffe"``, ``"torch"``
        or ``"tf"`` (see :data:`filterviz.core.network.PREPROCESSINGS`).
      transforms: applied in order to each image at each step (see :mod:`filterviz.core.transforms`).
      transform_copies: random views of each image per step (MaCo's crops per step).
      optimizer: an :class:`Optimizer`, or any ``optax.GradientTransformation`` (compiled per object).
      steps: optimisation steps (per stage, with octaves).
      images_per_filter: K, images optimised together per objective (for diversity).
      octaves: an :class:`Octaves`, or None for one stage at the full size (pixel methods only).
      picture: how pixels become ``uint8``: ``"notebook"`` (std 0.1), ``"keras"`` (std 0.25), ``"clip"``
        (the final pixels clipped to 0-255, before they are measured and returned).
      redirect_relu: Lucid's ReLU gradient override (:func:`filterviz.networks.layers.redirected_relu`), which
        lets a filter that is off everywhere on the start image turn on.
      precision: ``"float32"``, ``"tf32"`` or ``"bfloat16"``, as :func:`filterviz.ascend`.
      view: the viewing scale: each transformed image is resized, differentiably, so that its longer
        side is ``view`` pixels before the network sees it (:class:`~filterviz.core.transforms.View`),
        e.g. 224, the scale ImageNet networks were trained at; None feeds the picture's own scale. The
        achieved activation is measured at the same scale.
      alpha: also return a transparency map per image: the mean over the steps of the objective's
        absolute gradient with respect to the pixels, MaCo's attribution-based alpha (Fel et al., 2023).
    """

    name: str = "custom"
    parameterization: Parameterization = Pixels()  # noqa: RUF009 (frozen, so sharing one is safe)
    preprocessing: str = "raw"
    transforms: tuple[Transform, ...] = ()
    transform_copies: int = 1
    optimizer: Optimizer | optax.GradientTransformation = Optimizer("normalized", NOTEBOOK_STEP_SIZE)
    steps: int = NOTEBOOK_STEPS
    images_per_filter: int = 1
    octaves: Octaves | None = None
    picture: str = "notebook"
    redirect_relu: bool = False
    precision: str = "float32"
    view: int | None = None
    alpha: bool = False

    @property
    def images_per_objective(self) -> int:
        """Images one objective sends through the network at each step: K images times their copies."""
        return self.images_per_filter * self.transform_copies

    def check(self) -> Method:
        """This method, or :class:`SettingError` naming the first setting that cannot work."""
        if self.preprocessing != "network" and self.preprocessing not in PREPROCESSINGS:
            raise SettingError(
                f"unknown preprocessing {self.preprocessing!r}; choose network or one of "
                f"{', '.join(PREPROCESSINGS)}"
            )
        compute_dtype(self.precision)
        check_count(self.steps, "steps", minimum=0)
        check_count(self.images_per_filter, "images_per_filter")
        check_count(self.transform_copies, "transform_copies")
        if self.picture not in PICTURE_STYLES:
            raise SettingError(
                f"unknown picture style {self.picture!r}; choose one of {', '.join(PICTURE_STYLES)}"
            )
        if self.view is not None:
            check_count(self.view, "view")
        if not (isinstance(self.transforms, tuple) and all(map(callable, self.transforms))):
            raise SettingError(
                f"transforms must be a tuple of Transform or one of {', '.join(TRANSFORM_SETS)}, "
                f"got {self.transforms!r}"
            )
        if self.alpha and self.octaves is not None:
            raise SettingError("a transparency map (alpha) needs one stage: use it without octaves")
        if self.octaves is not None and not isinstance(self.parameterization, Pixels):
            raise SettingError("octaves grow a pixel image: use them with Pixels()")
        if self.octaves is not None and not isinstance(self.octaves, Octaves):
            raise SettingError(f"octaves must be an Octaves(stages, scale) or None, got {self.octaves!r}")
        if self.octaves is not None:
            check_count(self.octaves.stages, "octave stages")
            if not (isinstance(self.octaves.scale, int | float) and 1 < self.octaves.scale < float("inf")):
                raise SettingError(f"octaves need a finite scale above 1, got {self.octaves.scale!r}")
        if isinstance(self.optimizer, Optimizer):
            self.optimizer.build()
        return self

    def fed_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of what the network is fed for a ``height x width`` picture: its :attr:`view`."""
        return (height, width) if self.view is None else View(self.view).viewed(height, width)

    def to_pictures(self, pixels: jax.Array | np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
        """``float32[..., H, W, 3]`` pixels as ``uint8`` pictures in this method's style: RGB, or RGBA
        ``[..., H, W, 4]`` given a transparency ``alpha float32[..., H, W]`` in [0, 1]."""
        if self.picture == "clip":
            pictures = clip_image(pixels)
        else:
            pictures = as_image(pixels, 0.25 if self.picture == "keras" else 0.1)
        if alpha is None:
            return pictures
        opacity = np.round(np.clip(np.asarray(alpha, np.float32), 0.0, 1.0) * 255).astype(np.uint8)
        return np.concatenate([pictures, opacity[..., None]], axis=-1)

    def describe(self) -> dict[str, Any]:
        """Every setting as JSON-ready values (for a sweep's settings file)."""
        described = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            described[field.name] = repr(value) if not isinstance(value, str | int | float) else value
        return described

    def resolved(self, network: Network) -> Method:
        """This method with ``preprocessing="network"`` replaced by the network's own convention."""
        if self.preprocessing != "network":
            return self
        return dataclasses.replace(self, preprocessing=network.preprocessing)

    def optimizer_transformation(
        self, learning_rate: jax.Array | float | None = None
    ) -> optax.GradientTransformation:
        """The optimizer; ``learning_rate`` replaces an :class:`Optimizer`'s own (see :meth:`split_rate`)."""
        if isinstance(self.optimizer, Optimizer):
            return self.optimizer.build(learning_rate)
        return self.optimizer

    def split_rate(self) -> tuple[Method, float | None]:
        """This method with its :class:`Optimizer`'s learning rate set to 1, and the rate: the engine
        passes the rate as a traced argument, so one compiled program serves every step size."""
        if not isinstance(self.optimizer, Optimizer):
            return self, None
        rate = float(self.optimizer.learning_rate)
        return dataclasses.replace(
            self, optimizer=dataclasses.replace(self.optimizer, learning_rate=1.0)
        ), rate


MACO_BOX = (0.25, 0.30)
"""MaCo's crops: squares of 25-30% of the picture's side, each viewed at the network's 224. The paper's
implementation (Horama's ``optimization_step``) takes ``box_size=(0.20, 0.25)`` but draws the width
as ``uniform(0, 0.05) + 0.25``; these are the crops it runs, and they score higher here than 20-25%
(BENCHMARKS.md, "Fidelity")."""
MACO_NOISE = 0.05 * 255 / 5
"""MaCo's noise, 0.05 on its input range of 5 (-2.5..2.5), in 0-255 pixel units: 2.55."""

METHODS: dict[str, Method] = {
    "notebook": Method(name="notebook"),
    "lucid": Method(
        name="lucid",
        parameterization=Fourier(sd=0.01, decay_power=1.0, decorrelate=True),
        preprocessing="network",
        transforms=STANDARD,
        optimizer=Optimizer("adam", 0.05),
        steps=512,
        picture="clip",
        redirect_relu=True,
    ),
    "maco": Method(
        name="maco",
        parameterization=Maco(),
        preprocessing="network",
        transforms=(RandomCrop(box=MACO_BOX, centre_sd=0.15), Noise(std=MACO_NOISE)),
        transform_copies=6,
        optimizer=Optimizer("scheduled_nadam", 1.0),
        steps=256,
        picture="clip",
        view=224,
        alpha=True,
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
    """A preset by name (or a :class:`Method`) with ``settings`` replaced, checked: the one way every
    entry point takes method settings. ``settings`` are :class:`Method` fields, plus ``step_size``: the
    learning rate of the method's :class:`Optimizer`.

    >>> get_method("lucid", steps=64).steps
    64
    >>> get_method("notebook", step_size=2.0).optimizer.learning_rate
    2.0
    """
    if isinstance(method, str):
        if method not in METHODS:
            raise SettingError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        method = METHODS[method]
    step_size = settings.pop("step_size", None)
    if isinstance(settings.get("transforms"), str):  # a set by name, as the command line names them
        name = settings["transforms"]
        if name not in TRANSFORM_SETS:
            raise SettingError(f"unknown transforms {name!r}; choose one of {', '.join(TRANSFORM_SETS)}")
        settings["transforms"] = TRANSFORM_SETS[name]
    elif isinstance(settings.get("transforms"), list):  # hashable, as a compiled program's setting must be
        settings["transforms"] = tuple(settings["transforms"])
    try:
        method = dataclasses.replace(method, **settings)
    except TypeError as error:
        raise SettingError(f"bad method setting: {error}") from None
    if step_size is not None:
        if not isinstance(method.optimizer, Optimizer):
            raise SettingError("step_size sets an Optimizer's learning rate; this method has an optax one")
        rate = check_step_size(step_size)
        optimizer = dataclasses.replace(method.optimizer, learning_rate=rate)
        method = dataclasses.replace(method, optimizer=optimizer)
    return method.check()


def notebook_method(
    steps: int = NOTEBOOK_STEPS, step_size: float = NOTEBOOK_STEP_SIZE, precision: str = "float32"
) -> Method:
    """The ``notebook`` preset with these steps, step size and precision (epsilon 1e-5, as the notebook).

    >>> notebook_method(5).steps
    5
    """
    return get_method(
        "notebook", steps=steps, optimizer=Optimizer("normalized", float(step_size)), precision=precision
    )
