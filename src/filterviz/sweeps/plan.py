"""What a sweep will do, checked before any work: its filters, its method and the settings it records.

:func:`plan_sweep` turns :func:`filterviz.sweep`'s arguments into a :class:`SweepPlan`, raising a
:class:`~filterviz.FilterVizError` for anything that cannot work; :class:`SweepSettings` is what a folder
records, so a resumed sweep continues only with the same settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from filterviz.core.ascent_checks import check_method_size, check_size, check_start, start_parameterization
from filterviz.core.checks import (
    check_filters,
    check_params,
    check_seed,
)
from filterviz.core.methods import (
    NOTEBOOK_STEP_SIZE,
    NOTEBOOK_STEPS,
    Method,
    Optimizer,
    get_method,
)
from filterviz.core.network import Network, Params
from filterviz.core.pictures import random_image
from filterviz.errors import ImageError, SettingError
from filterviz.io.files import read_json_object
from filterviz.io.spectrum import resolve_spectrum
from filterviz.networks.weights import content_digest
from filterviz.sweeps.layout import select_layers


class SweepPlan(NamedTuple):
    """A checked sweep: ``filters`` ``[(layer, int32[N]), ...]``, the method, the start image
    (``float32[H, W, 3]``, or None where each filter draws its own), and the settings to record."""

    network: Network
    filters: list[tuple[str, np.ndarray]]
    method: Method
    start: np.ndarray | None
    settings: SweepSettings


def plan_sweep(
    params: Params,
    network: Network,
    *,
    layers: Iterable[str] | None,
    filters: Sequence[int] | Mapping[str, Sequence[int]] | None,
    size: int | tuple[int, int],
    seed: int,
    start: np.ndarray | None,
    method: str | Method,
    raw: bool,
    settings: dict[str, Any],
) -> SweepPlan:
    """Every check of :func:`filterviz.sweep`'s arguments, before anything is allocated or written."""
    plan = plan_filters(network, layers, filters)
    check_params(network, params)
    seed = check_seed(seed)
    chosen = _sweep_method(method, settings, network)
    precision = chosen.precision
    notebook = chosen.name == "notebook"
    if start is not None:
        start_parameterization(chosen)
    if start is None:
        height, width = check_size(size)
    else:
        start = np.asarray(check_start(start, 1))
        if start.ndim != 3:
            raise ImageError(None, f"start image must be [H, W, 3], got {start.shape}")
        height, width = start.shape[:2]
    deepest = max((layer for layer, _ in plan), key=network.order, default=None)
    if deepest is not None:  # before anything is allocated: too small, or too large for the device
        check_method_size(network, chosen, deepest, height, width)
    start_name = "noise" if start is None else _start_digest(start)
    if start is None and notebook:  # the notebook's filters share one noise start; others draw their own
        start = np.asarray(random_image(jax.random.key(seed), height, width))
    recorded = SweepSettings(
        height=height,
        width=width,
        steps=chosen.steps,
        step_size=float(chosen.optimizer.learning_rate),
        seed=seed,
        start=start_name,
        precision=precision,
        raw=raw,
        weights=content_digest(params, network),
        method=chosen.name,
        # The notebook's settings are the fields above (as sweep folders have always recorded them).
        method_settings="" if notebook else json.dumps(chosen.describe(), sort_keys=True),
        network=network.name,
    )
    return SweepPlan(network, plan, chosen, start, recorded)


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    """Everything that decides a sweep's pictures; a folder's sweep only continues with equal settings.

    ``start`` is ``"noise"`` (the notebook's grey noise from ``seed``) or ``"image sha256:<hex>"`` for a
    given start image; ``weights`` is :func:`filterviz.networks.weights.content_digest` of the parameters.
    ``method`` names the method; for any but the notebook's, ``method_settings`` holds all its settings
    (``steps`` and ``step_size`` are then its steps and learning rate).
    """

    height: int = 128
    width: int = 128
    steps: int = NOTEBOOK_STEPS
    step_size: float = NOTEBOOK_STEP_SIZE
    seed: int = 0
    start: str = "noise"
    precision: str = "float32"
    raw: bool = False
    weights: str = ""
    method: str = "notebook"
    method_settings: str = ""
    network: str = "vgg16"

    def differences(self, other: SweepSettings) -> list[str]:
        """``["steps: 20 here, 10 asked", ...]`` for each field that differs from ``other``."""
        found = [
            f"{field.name}: {getattr(self, field.name)!r} in the folder, {getattr(other, field.name)!r} asked"
            for field in dataclasses.fields(self)
            if field.name != "method_settings" and getattr(self, field.name) != getattr(other, field.name)
        ]
        if self.method == other.method and self.method_settings != other.method_settings:
            # Name the method's settings that differ rather than print both in full.
            mine, theirs = (
                read_json_object(text or "{}") for text in (self.method_settings, other.method_settings)
            )
            found += [
                f"{self.method} {key}: {mine.get(key)!r} in the folder, {theirs.get(key)!r} asked"
                for key in sorted(set(mine) | set(theirs))
                if mine.get(key) != theirs.get(key) and key != "steps"
            ]
        return found


def plan_filters(
    network: Network,
    layers: Iterable[str] | str | None = None,
    filters: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
) -> list[tuple[str, np.ndarray]]:
    """``[(layer, int32[N]), ...]``: the filters a sweep covers, each checked.

    ``layers`` defaults to the network's visual layers (VGG16's 13 conv layers), and may be one name;
    ``filters`` to all of each layer, or one sequence for every layer, or a ``{layer: sequence}``
    mapping (layers it leaves out get all their filters).
    """
    names = select_layers(network, layers)
    if isinstance(filters, Mapping) and set(filters) - set(names):
        extra = ", ".join(sorted(map(str, set(filters) - set(names))))
        raise SettingError(f"filters are given for {extra}, which the sweep does not cover")
    plan = []
    for name in names:
        chosen = filters.get(name) if isinstance(filters, Mapping) else filters
        indices = (
            np.arange(network.layer(name).channels)
            if chosen is None
            else check_filters(network, name, chosen)
        )
        plan.append((name, np.unique(indices).astype(np.int32)))
    return plan


def _start_digest(image: np.ndarray) -> str:
    return "image sha256:" + hashlib.sha256(np.ascontiguousarray(image, "<f4").tobytes()).hexdigest()


def _sweep_method(method: str | Method, settings: dict[str, Any], network: Network) -> Method:
    """The method a sweep runs, with these settings, its preprocessing resolved for ``network``."""
    chosen = get_method(method, **settings)
    if not isinstance(chosen.optimizer, Optimizer):
        # An optax object has no stable description for sweep.json, so a resume could not be checked.
        raise SettingError(
            "a sweep records its settings: give the optimizer as filterviz.core.methods.Optimizer(name, rate)"
        )
    if chosen.images_per_filter != 1:
        raise SettingError("a sweep draws one picture per filter: images_per_filter must be 1")
    return resolve_spectrum(chosen).resolved(network)
