"""Objectives: what an ascent maximises, as pure functions of a layer's activations.

Every objective is called as ``objective(activations) -> float32[]``, where ``activations`` maps layer
names to ``float32[K, h, w, C]``: the activations of the K images one visualisation optimises together
(K = 1 unless a diversity term asks for several). Objectives compose: ``a + b``, ``a - b``, ``2.0 * a``,
``-a``; a sum over several layers still runs the network once, to the deepest layer named.

An objective is a pytree. Its structure (which terms, layers, weights, positions) is static; its numbers
(filter indices, direction vectors) are leaves, which is what lets one compiled program serve every
filter: ``channel("block4_conv1", range(512))`` is one objective with a leading axis of 512 on its
index, and the ascent vmaps over that axis (see :meth:`Objective.batch_size`).

Objectives name layers, not networks: :meth:`Objective.check` checks them against the ascent's network
(layer names, filter ranges, vector lengths) before any work. :func:`objective` makes one of your own.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from filterviz.core.network import Network
from filterviz.core.relu import redirected_relu
from filterviz.errors import FilterIndexError, SettingError

Activations = Mapping[str, jax.Array]


# ----------------------------------------------------------------------------------------------------
# Terms: one function per kind, ``(activation float32[K, h, w, C], arguments, options) -> float32[]``.


def _channel(activation: jax.Array, arguments: tuple[jax.Array, ...], options: tuple) -> jax.Array:
    (index,) = arguments
    return jnp.mean(jnp.take(activation, index, axis=-1))


def _neuron(activation: jax.Array, arguments: tuple[jax.Array, ...], options: tuple) -> jax.Array:
    (index,) = arguments
    y, x = options
    height, width = activation.shape[1:3]
    y = height // 2 if y is None else y
    x = width // 2 if x is None else x
    return jnp.mean(jnp.take(activation[:, y, x, :], index, axis=-1))


def _direction(activation: jax.Array, arguments: tuple[jax.Array, ...], options: tuple) -> jax.Array:
    (vector,) = arguments
    return jnp.mean(activation @ vector.astype(activation.dtype))


def _concept(activation: jax.Array, arguments: tuple[jax.Array, ...], options: tuple) -> jax.Array:
    # Rectified as the encoder is, with Lucid's redirected gradient: a concept off at every position of
    # the start image would otherwise get no gradient at all and stay a grey picture.
    vector, bias = arguments
    return jnp.mean(redirected_relu(activation @ vector.astype(activation.dtype) + bias))


def _deepdream(activation: jax.Array, arguments: tuple[jax.Array, ...], options: tuple) -> jax.Array:
    return jnp.mean(jnp.square(activation))


def _custom(activations: Activations, arguments: tuple[jax.Array, ...], options: tuple) -> jax.Array:
    value = options[0](activations, *arguments)
    if np.shape(value) not in ((), (1,)):  # checked as the program is traced, before any step runs
        raise SettingError(f"an objective's function must return a scalar, got shape {np.shape(value)}")
    try:
        return jnp.asarray(value, jnp.float32).reshape(())
    except (TypeError, ValueError):
        raise SettingError(
            f"an objective's function must return a number, got {type(value).__name__}"
        ) from None


def _diversity(activation: jax.Array, arguments: tuple[jax.Array, ...], options: tuple) -> jax.Array:
    count = activation.shape[0]
    if count < 2:
        return jnp.zeros((), jnp.float32)
    flat = activation.reshape(count, -1, activation.shape[-1])
    grams = jnp.einsum("kpc,kpd->kcd", flat, flat).reshape(count, -1)
    grams = grams / (jnp.linalg.norm(grams, axis=-1, keepdims=True) + 1e-10)
    similarity = grams @ grams.T  # cosine similarity of every pair of images' Gram matrices
    off_diagonal = jnp.sum(similarity) - jnp.trace(similarity)
    # Negated: the objective rises as the images' styles grow apart.
    return -off_diagonal / count


# A custom term sees every layer it names, so it is called apart from these.
_TERMS: dict[str, Callable[[jax.Array, tuple[jax.Array, ...], tuple], jax.Array]] = {
    "channel": _channel,
    "neuron": _neuron,
    "direction": _direction,
    "concept": _concept,
    "deepdream": _deepdream,
    "diversity": _diversity,
}
# Rank of each argument of one (unbatched) term: a channel index is a scalar, a direction a vector.
_ARGUMENT_RANKS = {
    "channel": (0,),
    "neuron": (0,),
    "direction": (1,),
    "concept": (1, 0),
    "deepdream": (),
    "diversity": (),
    "custom": (),
}


@dataclasses.dataclass(frozen=True)
class Term:
    """One weighted term of an objective; ``kind``, ``layer``, ``weight`` and ``options`` are static."""

    kind: str
    layer: str
    weight: float
    arguments: tuple[Any, ...]
    options: tuple = ()

    def ranks(self) -> tuple[int, ...]:
        """The rank of each argument of one (unbatched) objective; one more means batched."""
        if self.kind == "custom":  # options: (function, layers, rank of one objective's value)
            return (self.options[2],) if self.arguments else ()
        return _ARGUMENT_RANKS[self.kind]

    def batch_size(self) -> int | None:
        """Leading size of the batched arguments, or None when every argument is a single value."""
        sizes = {
            np.shape(argument)[0]
            for argument, rank in zip(self.arguments, self.ranks(), strict=False)
            if np.ndim(argument) == rank + 1
        }
        if len(sizes) > 1:
            raise SettingError(
                f"{self.kind} term on {self.layer}: batched arguments of sizes {sorted(sizes)}"
            )
        return sizes.pop() if sizes else None


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class Objective:
    """A weighted sum of terms, ``sum(weight * term(activations[layer]))``; build it from the functions below.

    >>> objective = channel("block1_conv2", 3) - 0.5 * deepdream("block1_conv1")
    >>> objective.layers
    ('block1_conv2', 'block1_conv1')
    >>> acts = {name: jnp.ones((1, 4, 4, 64)) for name in objective.layers}
    >>> float(objective(acts))
    0.5
    """

    terms: tuple[Term, ...]

    def __call__(self, activations: Activations) -> jax.Array:
        total = jnp.zeros((), jnp.float32)
        for term in self.terms:
            if term.kind == "custom":
                seen = {name: activations[name].astype(jnp.float32) for name in term.options[1]}
                value = _custom(seen, term.arguments, term.options)
            else:
                value = _TERMS[term.kind](
                    activations[term.layer].astype(jnp.float32), term.arguments, term.options
                )
            total = total + term.weight * value
        return total

    @property
    def layers(self) -> tuple[str, ...]:
        """The layers the terms read, each once, in the order the terms name them."""
        names: dict[str, None] = {}
        for term in self.terms:
            for name in term.options[1] if term.kind == "custom" else (term.layer,):
                names[name] = None
        return tuple(names)

    def single_channel(self) -> tuple[str, jax.Array] | None:
        """``(layer, index)`` when the objective is one channel term of weight 1 (the fast path's case)."""
        if len(self.terms) == 1 and self.terms[0].kind == "channel" and self.terms[0].weight == 1.0:
            return self.terms[0].layer, self.terms[0].arguments[0]
        return None

    def check(self, network: Network) -> Objective:
        """This objective, if every term fits ``network``: known layers, filter indices in range, vectors
        of the layer's width. Else :class:`UnknownLayerError`, :class:`FilterIndexError` or
        :class:`SettingError`, before any work."""
        for term in self.terms:
            for name in term.options[1] if term.kind == "custom" else (term.layer,):
                network.layer(name)
            if term.kind in ("channel", "neuron"):
                spec = network.layer(term.layer)
                try:
                    values = np.asarray(term.arguments[0]).reshape(-1)
                except (TypeError, jax.errors.TracerArrayConversionError):
                    continue  # traced inside a jit: checked by whoever traced it
                for value in values:
                    if not 0 <= value < spec.channels:
                        raise FilterIndexError(spec.name, int(value), spec.channels)
            if term.kind in ("direction", "concept"):
                spec = network.layer(term.layer)
                width = np.shape(term.arguments[0])[-1]
                if width != spec.channels:
                    raise SettingError(f"a direction in {spec.name} has {spec.channels} values, got {width}")
        return self

    def batch_size(self) -> int | None:
        """How many objectives this one stacks (the leading size of its batched arguments), or None.

        Raises :class:`SettingError` if two terms are batched with different sizes.
        """
        sizes = {size for term in self.terms if (size := term.batch_size()) is not None}
        if len(sizes) > 1:
            raise SettingError(f"objective terms are batched with different sizes {sorted(sizes)}")
        return sizes.pop() if sizes else None

    def check_positions(self, network: Network, height: int, width: int) -> None:
        """:class:`SettingError` if a neuron term's position lies outside its layer's map for a
        ``height x width`` image (indexing would clamp it silently to the edge)."""
        for term in self.terms:
            if term.kind != "neuron":
                continue
            rows, columns = network.output_size(term.layer, height, width)
            y, x = term.options
            if (y is not None and y >= rows) or (x is not None and x >= columns):
                raise SettingError(
                    f"neuron ({y}, {x}) lies outside {term.layer}'s {rows}x{columns} map for a "
                    f"{height}x{width} image"
                )

    def batch_axes(self) -> Objective:
        """The ``in_axes`` that vmaps over this objective's batch: 0 for batched leaves, None for shared."""
        terms = tuple(
            dataclasses.replace(
                term,
                arguments=tuple(
                    0 if np.ndim(argument) == rank + 1 else None
                    for argument, rank in zip(term.arguments, term.ranks(), strict=False)
                ),
            )
            for term in self.terms
        )
        return Objective(terms)

    def take(self, rows: np.ndarray | Sequence[int]) -> Objective:
        """The objectives at ``rows`` of the batch (shared arguments kept whole)."""
        rows = np.asarray(rows)
        terms = tuple(
            dataclasses.replace(
                term,
                arguments=tuple(
                    argument[rows] if np.ndim(argument) == rank + 1 else argument
                    for argument, rank in zip(term.arguments, term.ranks(), strict=False)
                ),
            )
            for term in self.terms
        )
        return Objective(terms)

    # Composition ------------------------------------------------------------------------------------
    def __add__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(self.terms + other.terms)

    def __mul__(self, factor: float) -> Objective:
        if not isinstance(factor, int | float):
            return NotImplemented
        weights = [term.weight * factor for term in self.terms]
        # Finite in float32, where the program computes: 1e300 is already infinite there.
        if not all(math.isfinite(w) and abs(w) <= _LARGEST_WEIGHT for w in weights):
            raise SettingError(
                f"an objective's weight must be finite and at most {_LARGEST_WEIGHT:g} in size, got "
                f"{factor!r} (giving {max(map(abs, weights)):g})"
            )
        return Objective(
            tuple(dataclasses.replace(t, weight=w) for t, w in zip(self.terms, weights, strict=True))
        )

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return self * -1.0

    def __sub__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-other)

    # Pytree: the arguments are the leaves, everything else is static structure.
    def tree_flatten(self) -> tuple[tuple[tuple[Any, ...], ...], tuple[tuple[str, str, float, tuple], ...]]:
        children = tuple(term.arguments for term in self.terms)
        structure = tuple((term.kind, term.layer, term.weight, term.options) for term in self.terms)
        return children, structure

    @classmethod
    def tree_unflatten(cls, structure: Any, children: Any) -> Objective:
        return cls(
            tuple(
                Term(kind, layer, weight, tuple(arguments), options)
                for (kind, layer, weight, options), arguments in zip(structure, children, strict=False)
            )
        )


_INT32 = np.iinfo(np.int32)
_LARGEST_WEIGHT = 1e30
"""Objective weights beyond this overflow float32 once multiplied by an activation."""


def _indices(index: int | Sequence[int] | np.ndarray | jax.Array) -> jax.Array:
    try:
        values = np.asarray(index)
    except jax.errors.TracerArrayConversionError:  # traced inside a jit or vmap: checked by the caller
        return jnp.asarray(index, jnp.int32)
    except ValueError:  # a ragged list, [[0, 1], [2]]
        raise SettingError(
            f"a filter index must be an int or a 1-D sequence of ints, got {index!r}"
        ) from None
    if values.ndim > 1 or (values.size and not np.issubdtype(values.dtype, np.integer)):
        raise SettingError(f"a filter index must be an int or a 1-D sequence of ints, got {index!r}")
    if values.size == 0:
        raise SettingError("a filter index list is empty: name at least one filter")
    outside = values[(values < _INT32.min) | (values > _INT32.max)]
    if outside.size:  # int32 would wrap them silently onto small, valid filters
        raise SettingError(f"a filter index must fit in 32 bits, got {outside[0]}")
    return jax.device_put(values.astype(np.int32))  # cast on the host: no program compiled for it


def _layer(layer: object) -> str:
    if not isinstance(layer, str) or not layer:
        raise SettingError(f"a layer is named by a string, got {layer!r}")
    return layer


def channel(layer: str, index: int | Sequence[int] | np.ndarray | jax.Array) -> Objective:
    """Mean activation of filter ``index`` of ``layer`` over every position and image (the notebook's loss).

    ``index`` may be a sequence of N filters: one objective per filter, batched.
    """
    return Objective((Term("channel", _layer(layer), 1.0, (_indices(index),)),))


def neuron(
    layer: str, index: int | Sequence[int] | np.ndarray, y: int | None = None, x: int | None = None
) -> Objective:
    """Activation of filter ``index`` at one position ``(y, x)`` of ``layer`` (default: the centre)."""
    for value, axis in ((y, "y"), (x, "x")):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise SettingError(
                f"a neuron's {axis} must be a position from 0, or None for the centre, got {value!r}"
            )
    return Objective((Term("neuron", _layer(layer), 1.0, (_indices(index),), (y, x)),))


def direction(layer: str, vector: Sequence[float] | np.ndarray | jax.Array) -> Objective:
    """Projection of ``layer``'s activations on ``vector float32[C]`` (or ``[N, C]``), mean over positions."""
    try:
        vector = jnp.asarray(vector, jnp.float32)
    except (TypeError, ValueError):
        raise SettingError(f"a direction is a vector of numbers, got {type(vector).__name__}") from None
    if vector.ndim not in (1, 2):
        raise SettingError(f"a direction is [C] or [N, C], got shape {vector.shape}")
    if not bool(jnp.isfinite(vector).all()):
        raise SettingError(f"a direction in {layer} holds NaN or infinite values")
    if not bool(jnp.any(vector != 0, axis=-1).all()):
        raise SettingError(f"a direction in {layer} is all zeros: it points nowhere")
    return Objective((Term("direction", _layer(layer), 1.0, (vector,)),))


def concept(
    layer: str,
    vector: Sequence[float] | np.ndarray | jax.Array,
    bias: float | Sequence[float] | np.ndarray | jax.Array = 0.0,
) -> Objective:
    """A concept's code at ``layer``, ``relu(activation @ vector + bias)``, mean over positions: what a
    dictionary's encoder gives (``vector float32[C]`` and ``bias``, or ``[N, C]`` and ``[N]`` for N
    concepts, batched as ``channel`` is). :func:`filterviz.concepts` returns them for its dictionary. The
    rectification passes Lucid's redirected gradient, so a concept off everywhere on the start image can
    still be turned on."""
    term = direction(layer, vector).terms[0]
    try:
        biases = jnp.asarray(bias, jnp.float32)
    except (TypeError, ValueError):
        raise SettingError(
            f"a concept's bias is a number or [N] numbers, got {type(bias).__name__}"
        ) from None
    vectors = term.arguments[0]
    if biases.shape not in ((), vectors.shape[:-1]) or not bool(jnp.isfinite(biases).all()):
        raise SettingError(f"a concept's bias is a finite number or one per vector {vectors.shape[:-1]}")
    if vectors.ndim == 2 and biases.ndim == 0:
        biases = jnp.broadcast_to(biases, vectors.shape[:1])
    return Objective((Term("concept", term.layer, 1.0, (vectors, biases)),))


def deepdream(layer: str) -> Objective:
    """Mean squared activation of every filter of ``layer``: amplify whatever the layer already sees."""
    return Objective((Term("deepdream", _layer(layer), 1.0, ()),))


def diversity(layer: str) -> Objective:
    """Minus the mean cosine similarity between the Gram matrices of the K images optimised together.

    Add it with a weight (Lucid uses 100) to a filter objective and optimise several images per filter
    (``images_per_filter``) to see different facets of one filter; zero when K is 1.
    """
    return Objective((Term("diversity", _layer(layer), 1.0, ()),))


def objective(
    function: Callable[..., jax.Array],
    *layers: str,
    each: Sequence[Any] | np.ndarray | jax.Array | None = None,
) -> Objective:
    """An objective of your own: ``function({layer: float32[K, h, w, C]}) -> scalar`` over ``layers``.

    It composes with the others (``objective(f, "block4_conv1") + 10 * diversity("block3_conv1")``) and
    is maximised like them. ``function`` must be pure JAX; it is part of the compiled program's identity,
    so define it once (a module-level function) to reuse the program.

    With ``each`` (an array ``[N, ...]``), it is N objectives batched into one program, as
    ``channel(layer, range(N))`` is: objective ``n`` is ``function(activations, each[n])``.

    Examples:
        >>> mean_of_two = objective(lambda acts: acts["block1_conv1"][..., :2].mean(), "block1_conv1")
        >>> mean_of_two.layers
        ('block1_conv1',)
        >>> pairs = objective(lambda acts, ab: acts["block1_conv1"][..., ab].mean(), "block1_conv1",
        ...                   each=[[0, 1], [2, 3], [4, 5]])
        >>> pairs.batch_size()
        3
    """
    if not callable(function):
        raise SettingError(f"an objective's function must be callable, got {function!r}")
    if not layers:
        raise SettingError("name the layers the function reads: objective(function, 'block4_conv1', ...)")
    names = tuple(_layer(layer) for layer in layers)
    if each is None:
        return Objective((Term("custom", names[0], 1.0, (), (function, names, 0)),))
    try:
        values = jnp.asarray(each)
    except (TypeError, ValueError):
        raise SettingError(f"each must be an array [N, ...], one value per objective, got {each!r}") from None
    if values.ndim < 1 or len(values) == 0:
        raise SettingError(f"each must be an array [N, ...] with N >= 1, got shape {values.shape}")
    return Objective((Term("custom", names[0], 1.0, (values,), (function, names, values.ndim - 1)),))
