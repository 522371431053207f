"""Dictionaries of concepts over a layer's activation vectors: sparse autoencoders (TopK, BatchTopK,
JumpReLU, and the Archetypal SAE of Fel et al. 2025) and non-negative matrix factorisation. Pure JAX;
the fitting loop that streams minibatches from disk is :mod:`filterviz.concept_atlases.fit`.

Shapes: ``vectors [N, C]`` (a layer's activations, one per position), ``codes [N, K]`` (how strongly each
of the K concepts is present), ``atoms [K, C]`` (each concept's direction). Vectors are divided by
``scale``, their root mean square norm measured at the start, so that one learning rate suits every layer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from filterviz.errors import SettingError

KINDS = ("topk", "batchtopk", "jumprelu", "archetypal", "nmf")
"""The kinds of dictionary: four sparse autoencoders and a non-negative factorisation."""

Weights = dict[str, dict[str, jax.Array]]
"""``{"trained": {...}, "fixed": {...}}``: what the optimiser moves (JumpReLU's thresholds among them),
and what it never does (the scale, the archetypal anchors, BatchTopK's inference threshold)."""


@dataclasses.dataclass(frozen=True)
class Dictionary:
    """How a dictionary is made: ``kind`` (one of :data:`KINDS`), ``concepts`` (K), ``active`` (concepts
    active per vector, for the autoencoders), the archetypal ``anchors`` (data points whose convex hull
    holds every atom) and ``relaxation`` (how far, relative to the anchors' norm, an atom may leave it),
    and the optimiser's ``learning_rate``. Static: it keys the compiled programs."""

    kind: str = "topk"
    concepts: int = 64
    active: int = 8
    anchors: int = 1024
    relaxation: float = 0.01
    learning_rate: float = 1e-3

    def check(self, vectors: int | None = None) -> Dictionary:
        """This dictionary if its settings are sound (and fit ``vectors`` training vectors); else
        :class:`SettingError` in one line."""
        if self.kind not in KINDS:
            raise SettingError(f"no dictionary kind {self.kind!r}: choose from {', '.join(KINDS)}")
        for name in ("concepts", "active", "anchors"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SettingError(f"a dictionary's {name} is a whole number from 1, got {value!r}")
        if self.kind != "nmf" and self.active > self.concepts:
            raise SettingError(
                f"{self.active} concepts active per vector exceeds the {self.concepts} concepts"
            )
        if not 0 <= self.relaxation < 1 or not 0 < self.learning_rate < 1:
            raise SettingError("a dictionary's relaxation lies in [0, 1) and its learning rate in (0, 1)")
        if vectors is not None and vectors < self.concepts:
            raise SettingError(
                f"{self.concepts} concepts need at least as many vectors to learn from; there are {vectors}"
            )
        return self


def initial_weights(dictionary: Dictionary, key: jax.Array, sample: jax.Array | np.ndarray) -> Weights:
    """Seeded starting weights from a ``sample [n, C]`` of the vectors (their scale, mean and anchors)."""
    sample = jnp.asarray(sample, jnp.float32)
    scale = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(sample), axis=-1))) + 1e-12
    scaled = sample / scale
    channels, concepts = sample.shape[-1], dictionary.concepts
    atoms_key, anchors_key, mixing_key = jax.random.split(key, 3)
    fixed: dict[str, jax.Array] = {"scale": scale}
    if dictionary.kind == "nmf":
        rows = jax.random.choice(atoms_key, len(scaled), (concepts,), len(scaled) < concepts)
        noise = jax.random.uniform(anchors_key, (concepts, channels), minval=0.0, maxval=0.1)
        return {"trained": {"atoms": jnp.abs(scaled[rows]) + noise}, "fixed": fixed}
    # Atoms start on seeded vectors of the sample, as distinct as the data; the decoder's bias at zero, as
    # the layer's activations are a sum of concepts with no offset of their own (a ReLU's are >= 0).
    rows = jax.random.choice(atoms_key, len(scaled), (concepts,), len(scaled) < concepts)
    atoms = _unit(jax.random.normal(mixing_key, (concepts, channels)))
    trained = {"encoder": atoms.T, "encoder_bias": jnp.zeros(concepts), "decoder_bias": jnp.zeros(channels)}
    if dictionary.kind == "archetypal":
        # Seeded vectors of the sample as anchors; each atom starts as a random soft mixture of a few.
        chosen = jax.random.choice(anchors_key, len(scaled), (min(dictionary.anchors, len(scaled)),), False)
        fixed["anchors"] = scaled[chosen]
        trained["mixing"] = 0.1 * jax.random.normal(mixing_key, (concepts, len(chosen)))
        trained["relaxation"] = jnp.zeros((concepts, channels))
        trained["encoder"] = _unit(atoms_of_mixing(trained["mixing"], fixed["anchors"])).T
    else:
        trained["atoms"] = atoms
    fixed["idle"] = jnp.zeros(concepts, jnp.int32)
    if dictionary.kind == "batchtopk":
        fixed["threshold"] = jnp.zeros(())
    if dictionary.kind == "jumprelu":
        # Every concept's threshold starts where the sample's codes number `active` per vector.
        start = scaled @ trained["encoder"]
        kept = 1.0 - dictionary.active / concepts
        trained["threshold"] = jnp.full(concepts, jnp.maximum(jnp.quantile(start, kept), 0.0))
    return {"trained": trained, "fixed": fixed}


def _unit(rows: jax.Array) -> jax.Array:
    return rows / (jnp.linalg.norm(rows, axis=-1, keepdims=True) + 1e-12)


def atoms(dictionary: Dictionary, weights: Weights) -> jax.Array:
    """The decoder's atoms ``[K, C]`` in scaled units: unit rows, convex mixtures of the anchors (plus a
    bounded relaxation) for the Archetypal SAE, non-negative rows for NMF."""
    trained = weights["trained"]
    if dictionary.kind != "archetypal":
        return trained["atoms"]
    anchors = weights["fixed"]["anchors"]
    return atoms_of_mixing(trained["mixing"], anchors) + trained["relaxation"]


MIXING_SHARPNESS = 30.0
"""The archetypal mixing logits are this times the trained values: Adam's steps move them that much
faster, so an atom can travel across the hull within a fit."""


def atoms_of_mixing(mixing: jax.Array, anchors: jax.Array) -> jax.Array:
    """Convex mixtures ``[K, C]`` of the ``anchors [m, C]``, with weights ``softmax(sharpness * mixing)``."""
    return jax.nn.softmax(MIXING_SHARPNESS * mixing, axis=-1) @ anchors


def directions(dictionary: Dictionary, weights: Weights) -> jax.Array:
    """Each concept's direction in the layer's activation space, ``[K, C]`` of unit rows."""
    return _unit(atoms(dictionary, weights))


def preactivations(dictionary: Dictionary, weights: Weights, vectors: jax.Array | np.ndarray) -> jax.Array:
    """The encoder's linear part ``[N, K]`` for ``vectors [N, C]`` in the layer's units (NMF: the
    projections on the unit atoms)."""
    scaled = jnp.asarray(vectors) / weights["fixed"]["scale"]
    trained = weights["trained"]
    if dictionary.kind == "nmf":
        return scaled @ directions(dictionary, weights).T
    return (scaled - trained["decoder_bias"]) @ trained["encoder"] + trained["encoder_bias"]


def concept_vectors(dictionary: Dictionary, weights: Weights) -> tuple[jax.Array, jax.Array]:
    """``(vectors [K, C], biases [K])`` with ``preactivations(x) = x @ vectors.T + biases`` for raw
    activations ``x``: what the ``concept`` objective maximises, rectified."""
    scale = weights["fixed"]["scale"]
    if dictionary.kind == "nmf":
        unit = directions(dictionary, weights)
        return unit / scale, jnp.zeros(len(unit))
    trained = weights["trained"]
    vectors = trained["encoder"].T / scale
    return vectors, trained["encoder_bias"] - trained["decoder_bias"] @ trained["encoder"]


def _top_k(values: jax.Array, k: int) -> jax.Array:
    # Each row's k largest entries kept, the rest zeroed.
    kept = jax.lax.top_k(values, k)[0][..., -1:]
    return jnp.where(values >= kept, values, 0.0)


JUMP_BANDWIDTH = 0.05
"""The width, in scaled units, of the window around a JumpReLU threshold inside which a code's gradient
reaches the threshold (the straight-through estimator of Rajamanoharan et al. 2024)."""


def _window(codes: jax.Array, threshold: jax.Array) -> jax.Array:
    # The rectangle kernel of the straight-through estimator: 1/bandwidth near the threshold, else 0.
    return (jnp.abs(codes - threshold) < JUMP_BANDWIDTH / 2) / JUMP_BANDWIDTH


@jax.custom_vjp
def jump(codes: jax.Array, threshold: jax.Array) -> jax.Array:
    """``codes`` where they exceed ``threshold [K]``, else 0. The threshold's gradient is estimated
    through a window around it; the codes' is the step's own."""
    return jnp.where(codes > threshold, codes, 0.0)


def _jump_forward(codes: jax.Array, threshold: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return jump(codes, threshold), (codes, threshold)


def _jump_backward(saved: tuple[jax.Array, jax.Array], grad: jax.Array) -> tuple[jax.Array, jax.Array]:
    codes, threshold = saved
    through = jnp.where(codes > threshold, grad, 0.0)
    return through, jnp.sum(-threshold * _window(codes, threshold) * grad, axis=tuple(range(codes.ndim - 1)))


jump.defvjp(_jump_forward, _jump_backward)


@jax.custom_vjp
def active_count(codes: jax.Array, threshold: jax.Array) -> jax.Array:
    """How many ``codes [..., K]`` exceed ``threshold [K]``, per vector ``[...]``; its gradient reaches
    the threshold through the same window as :func:`jump`'s."""
    return jnp.sum(codes > threshold, axis=-1).astype(codes.dtype)


def _count_forward(codes: jax.Array, threshold: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return active_count(codes, threshold), (codes, threshold)


def _count_backward(saved: tuple[jax.Array, jax.Array], grad: jax.Array) -> tuple[jax.Array, jax.Array]:
    codes, threshold = saved
    window = _window(codes, threshold) * grad[..., None]
    return jnp.zeros_like(codes), -jnp.sum(window, axis=tuple(range(codes.ndim - 1)))


active_count.defvjp(_count_forward, _count_backward)


def encode(
    dictionary: Dictionary, weights: Weights, vectors: jax.Array | np.ndarray, *, training: bool = False
) -> jax.Array:
    """The codes ``[N, K] >= 0`` of ``vectors [N, C]`` (the layer's units).

    TopK and Archetypal keep each vector's ``k`` largest; BatchTopK keeps the ``k * N`` largest of the
    batch while ``training``, and after it every code above the threshold it learned; JumpReLU keeps
    every code above its concept's learned threshold; NMF solves non-negative least squares against the
    atoms."""
    if dictionary.kind == "nmf":
        return nmf_codes(atoms(dictionary, weights), vectors / weights["fixed"]["scale"])
    rectified = jax.nn.relu(preactivations(dictionary, weights, vectors))
    if dictionary.kind == "jumprelu":
        return jump(rectified, _thresholds(weights))
    if dictionary.kind != "batchtopk":
        return _top_k(rectified, dictionary.active)
    if training:
        kept = jax.lax.top_k(rectified.reshape(-1), dictionary.active * len(rectified))[0][-1]
        return jnp.where(rectified >= kept, rectified, 0.0)
    return jnp.where(rectified > weights["fixed"]["threshold"], rectified, 0.0)


def decode(dictionary: Dictionary, weights: Weights, codes: jax.Array) -> jax.Array:
    """The vectors ``[N, C]`` (the layer's units) that ``codes [N, K]`` rebuild."""
    rebuilt = codes @ atoms(dictionary, weights)
    if dictionary.kind != "nmf":
        rebuilt = rebuilt + weights["trained"]["decoder_bias"]
    return rebuilt * weights["fixed"]["scale"]


IDLE_STEPS = 200
"""A concept that has fired on no vector for this many steps counts as dead while training: the auxiliary
loss (Gao et al. 2024's AuxK) then has it rebuild what the live concepts miss, and so brings it back."""


def _loss(trained: dict, fixed: dict, dictionary: Dictionary, vectors: jax.Array) -> tuple[jax.Array, Any]:
    weights = {"trained": trained, "fixed": fixed}
    codes = encode(dictionary, weights, vectors, training=True)
    scale = fixed["scale"]
    error = (decode(dictionary, weights, codes) - vectors) / scale
    squared = jnp.mean(jnp.sum(jnp.square(error), axis=-1))
    dead = fixed["idle"] >= IDLE_STEPS
    rectified = jax.nn.relu(preactivations(dictionary, weights, vectors))
    revived = jnp.where(dead, rectified, 0.0)
    revived = _top_k(revived, min(2 * dictionary.active, dictionary.concepts))
    residual = revived @ atoms(dictionary, weights) + jax.lax.stop_gradient(error)
    auxiliary = jnp.mean(jnp.sum(jnp.square(residual), axis=-1)) / 32
    loss = squared + jnp.where(jnp.any(dead), auxiliary, 0.0)
    if dictionary.kind == "jumprelu":
        loss = loss + SPARSITY_WEIGHT * _sparsity(dictionary, _thresholds(weights), rectified)
    return loss, (squared, codes)


SPARSITY_WEIGHT = 1.0
"""JumpReLU's weight on its L0 term: strong enough that the thresholds hold about ``active`` codes per
vector, weak enough that the reconstruction decides which."""


def _sparsity(dictionary: Dictionary, thresholds: jax.Array, rectified: jax.Array) -> jax.Array:
    # JumpReLU's L0 term, as a squared distance from `active` codes per vector on average, so that one
    # word sets every autoencoder's sparsity (the paper's is lambda * L0 with lambda tuned by hand).
    count = jnp.mean(active_count(rectified, thresholds))
    return jnp.square(count / dictionary.active - 1.0)


def _thresholds(weights: Weights) -> jax.Array:
    # JumpReLU's thresholds [K], never below 0 (a rectified code is >= 0 already).
    return jnp.maximum(weights["trained"]["threshold"], 0.0)


def _project(dictionary: Dictionary, trained: dict, fixed: dict) -> dict:
    # After each step: unit atoms (a code's size is then its strength), or the archetypal relaxation
    # kept within its bound so every atom stays near the hull of real activations.
    if dictionary.kind == "archetypal":
        bound = dictionary.relaxation * jnp.sqrt(jnp.mean(jnp.sum(jnp.square(fixed["anchors"]), -1)))
        norms = jnp.linalg.norm(trained["relaxation"], axis=-1, keepdims=True)
        return {**trained, "relaxation": trained["relaxation"] * jnp.minimum(1.0, bound / (norms + 1e-12))}
    trained = {**trained, "atoms": _unit(trained["atoms"])}
    if dictionary.kind == "jumprelu":
        trained["threshold"] = jnp.maximum(trained["threshold"], 0.0)
    return trained


def optimizer(dictionary: Dictionary) -> optax.GradientTransformation:
    """The autoencoders' optimiser: Adam at the dictionary's learning rate."""
    return optax.adam(dictionary.learning_rate)


def autoencoder_step(
    dictionary: Dictionary, weights: Weights, state: Any, vectors: jax.Array
) -> tuple[Weights, Any, jax.Array]:
    """One optimiser step of a sparse autoencoder on a minibatch ``vectors [B, C]``: ``(weights, optimiser
    state, mean squared error in scaled units)``. BatchTopK's inference threshold follows the smallest
    code each batch keeps (a moving average)."""
    fixed = weights["fixed"]
    (_, (loss, codes)), grads = jax.value_and_grad(_loss, has_aux=True)(
        weights["trained"], fixed, dictionary, vectors
    )
    updates, state = optimizer(dictionary).update(grads, state, weights["trained"])
    trained = _project(dictionary, optax.apply_updates(weights["trained"], updates), fixed)
    fired = jnp.any(codes > 0, axis=0)
    fixed = {**fixed, "idle": jnp.where(fired, 0, fixed["idle"] + 1)}
    if dictionary.kind == "batchtopk":
        smallest = jnp.min(jnp.where(codes > 0, codes, jnp.inf))
        smallest = jnp.where(jnp.isfinite(smallest), smallest, fixed["threshold"])
        fixed = {**fixed, "threshold": 0.99 * fixed["threshold"] + 0.01 * smallest}
    return {"trained": trained, "fixed": fixed}, state, loss


# ----------------------------------------------------------------------------------------------------
# Non-negative matrix factorisation: vectors ~ codes @ atoms, both >= 0, by HALS (hierarchical
# alternating least squares), minibatch by minibatch with the sufficient statistics of Mairal et al.


ATOM_SWEEPS = 4
"""HALS sweeps over the atoms per minibatch."""


NNLS_TOLERANCE = 1e-4
"""The codes' HALS sweeps stop once a sweep moves no code by more than this fraction of the largest
(at 1e-3 a full-batch fit ends 1.4% above scikit-learn's optimum; at 1e-4 it reaches it)."""


def nmf_codes(atoms: jax.Array, vectors: jax.Array | np.ndarray, sweeps: int = 50) -> jax.Array:
    """Non-negative least squares codes ``[N, K]`` of ``vectors [N, C] >= 0`` against ``atoms [K, C]``:
    HALS sweeps over the concepts, at most ``sweeps``, until they settle (:data:`NNLS_TOLERANCE`)."""
    atoms, vectors = jnp.asarray(atoms), jnp.asarray(vectors)
    gram, projections = atoms @ atoms.T, vectors @ atoms.T
    codes = jax.nn.relu(projections) / (jnp.diag(gram) + 1e-12)

    def one(k: int, codes: jax.Array) -> jax.Array:
        step = (projections[:, k] - codes @ gram[:, k]) / (gram[k, k] + 1e-12)
        return codes.at[:, k].set(jax.nn.relu(codes[:, k] + step))

    def sweep(state: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
        done, codes, _ = state
        swept = jax.lax.fori_loop(0, len(atoms), one, codes)
        moved = jnp.max(jnp.abs(swept - codes)) / (jnp.max(swept) + 1e-12)
        return done + 1, swept, moved

    def unsettled(state: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
        done, _, moved = state
        return (done < sweeps) & (moved > NNLS_TOLERANCE)

    return jax.lax.while_loop(unsettled, sweep, (jnp.int32(0), codes, jnp.float32(jnp.inf)))[1]


def nmf_step(
    dictionary: Dictionary, weights: Weights, statistics: tuple[jax.Array, jax.Array], vectors: jax.Array,
    forgetting: float,
) -> tuple[Weights, tuple[jax.Array, jax.Array], jax.Array]:  # fmt: skip
    """One minibatch of NMF: codes for ``vectors [B, C]``, the statistics ``(codes'codes [K, K],
    codes'vectors [K, C])`` decayed by ``forgetting`` and updated, then the atoms by HALS. Returns
    ``(weights, statistics, mean squared error in scaled units)``. With one minibatch of every vector
    and ``forgetting = 0`` it is plain alternating HALS."""
    scaled = vectors / weights["fixed"]["scale"]
    atoms = weights["trained"]["atoms"]
    codes = nmf_codes(atoms, scaled)
    gram, cross = statistics
    gram, cross = forgetting * gram + codes.T @ codes, forgetting * cross + codes.T @ scaled

    def one(k: int, atoms: jax.Array) -> jax.Array:
        step = (cross[k] - gram[k] @ atoms) / (gram[k, k] + 1e-12)
        return atoms.at[k].set(jax.nn.relu(atoms[k] + step))

    def sweep(_: int, atoms: jax.Array) -> jax.Array:
        return jax.lax.fori_loop(0, len(atoms), one, atoms)

    atoms = jax.lax.fori_loop(
        0, ATOM_SWEEPS, sweep, atoms
    )  # the statistics are fixed: sweep them a few times
    loss = jnp.mean(jnp.sum(jnp.square(codes @ atoms - scaled), axis=-1))
    return {"trained": {"atoms": atoms}, "fixed": weights["fixed"]}, (gram, cross), loss


def nmf_statistics(dictionary: Dictionary, channels: int) -> tuple[jax.Array, jax.Array]:
    """Empty NMF statistics: ``(zeros [K, K], zeros [K, C])``."""
    return jnp.zeros((dictionary.concepts,) * 2), jnp.zeros((dictionary.concepts, channels))


# ----------------------------------------------------------------------------------------------------
# Measures, on held-out vectors.


def unexplained_variance(vectors: np.ndarray, rebuilt: np.ndarray) -> float:
    """1 - R²: the squared error over the vectors' total variance about their mean."""
    vectors, rebuilt = np.asarray(vectors, np.float64), np.asarray(rebuilt, np.float64)
    total = np.sum(np.square(vectors - vectors.mean(0)))
    return float(np.sum(np.square(vectors - rebuilt)) / max(total, 1e-30))


def mean_l0(codes: np.ndarray) -> float:
    """Concepts active per vector, on average."""
    return float(np.mean(np.sum(np.asarray(codes) > 0, axis=-1)))


def dead_fraction(codes: np.ndarray) -> float:
    """The fraction of concepts active on none of the vectors."""
    return float(np.mean(~np.any(np.asarray(codes) > 0, axis=0)))


def matched_cosine(first: np.ndarray, second: np.ndarray) -> tuple[float, np.ndarray]:
    """``(mean cosine, cosine of each row of first)`` between two sets of atoms ``[K, C]`` matched one to
    one by the Hungarian algorithm (atoms learned from two seeds, or planted and recovered)."""
    from scipy.optimize import linear_sum_assignment

    a, b = (np.asarray(x, np.float64) for x in (first, second))
    a = a / (np.linalg.norm(a, axis=-1, keepdims=True) + 1e-30)
    b = b / (np.linalg.norm(b, axis=-1, keepdims=True) + 1e-30)
    cosines = a @ b.T
    rows, columns = linear_sum_assignment(-cosines)
    matched = np.full(len(a), np.nan)
    matched[rows] = cosines[rows, columns]
    return float(np.nanmean(matched)), matched
