"""Measures shared by the benchmarks: the device's measured matmul peak, interleaved best-of-N timing
(every contender sees the same background noise of a shared machine) and the presets as benchmarked.
Agreement of results (relative error, displacement correlation) is the oracles' (``tests/parity.py``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

# The measures the tests' oracles use (tests/parity.py) are the benchmarks' too.
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))


def measure_peak_flops(size: int = 2048, repeats: int = 10, precision: str = "float32") -> float:
    """FLOP/s of a ``size``-square matmul on the default device (the best of ``repeats``), in
    ``precision``: float32 at full precision, TF32 tensor-core math, or bfloat16 inputs."""
    from filterviz.core.checks import matmul_precision

    keys = jax.random.split(jax.random.key(0), 2)
    a, b = (jax.random.normal(key, (size, size), jnp.float32) for key in keys)
    if precision == "bfloat16":
        a, b = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
    with matmul_precision(precision):
        product = jax.jit(jnp.matmul).lower(a, b).compile()
    product(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        product(a, b).block_until_ready()
        best = min(best, time.perf_counter() - began)
    return 2 * size**3 / best


def time_interleaved(runners: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict, dict]:
    """Best seconds and result of each runner; after one untimed warm-up each, the runners take turns
    ``repeats`` times, so every contender sees the same background noise of a shared machine."""
    results = {name: run() for name, run in runners.items()}
    best = dict.fromkeys(runners, float("inf"))
    for _ in range(repeats):
        for name, run in runners.items():
            began = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - began)
    return best, results


def preset(name: str, **settings: Any):
    """The preset ``name`` with ``settings``, its MaCo spectrum loaded; offline, with no spectrum file
    (``$FILTERVIZ_SPECTRUM``), the 1/f law stands in and the row's method says so."""
    import dataclasses

    import filterviz
    from filterviz.io.spectrum import resolve_spectrum

    method = filterviz.get_method(name, **settings)
    try:
        return resolve_spectrum(method)
    except filterviz.WeightsError:
        stand_in = dataclasses.replace(method.parameterization, spectrum=None)
        return filterviz.get_method(method, parameterization=stand_in)


def sample_photos(names: tuple[str, ...], size: int = 224, scikit_learn: bool = False) -> Any:
    """``float32[P, size, size, 3]`` in [0, 255]: scikit-image's sample photos ``names`` (grey ones
    repeated over three channels), then scikit-learn's two if ``scikit_learn``; both ship in their wheels."""
    import numpy as np
    from skimage import data, transform

    found = [getattr(data, name)() for name in names]
    if scikit_learn:
        from sklearn.datasets import load_sample_images

        found += list(load_sample_images().images)
    colour = [np.stack([photo] * 3, -1) if photo.ndim == 2 else photo[..., :3] for photo in found]
    return np.asarray([transform.resize(p, (size, size), preserve_range=True) for p in colour], np.float32)
