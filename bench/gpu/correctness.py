"""Part ``correctness``: the GPU against the CPU backend of the same process."""

from __future__ import annotations

import time
from typing import Any

from gpu.harness import (
    Config,
    Part,
    device_pair,
    finite,
    host_params,
)


def check_activations(config: Config, params_device, params_cpu) -> dict[str, Any]:
    import jax
    import numpy as np

    import filterviz
    from parity import relative_error

    _, cpu, _ = device_pair()
    size = config.activation_size
    images = np.asarray([filterviz.random_image(jax.random.key(seed), size, size) for seed in range(2)])
    errors = {}
    for layer in config.activation_layers:
        ours = np.asarray(filterviz.activations(params_device, images, layer))
        with jax.default_device(cpu):
            reference = np.asarray(filterviz.activations(params_cpu, images, layer))
        errors[layer] = finite(relative_error(ours, reference))
    bar = 1e-5  # the Keras parity test's bar for activations
    return {
        "relative_error": errors,
        "bar": bar,
        "passed": all(e is not None and e <= bar for e in errors.values()),
    }


def check_ascent(config: Config, params_device, params_cpu) -> list[dict[str, Any]]:
    """The notebook's 20-step ascent on the device against the CPU's, for filters of shallow and deep
    layers, held to the Keras parity test's bar: at least as close to the CPU's result as the CPU's
    result moves when its start is nudged by 1e-4 (the median of three nudges; pixel displacement and
    uint8 pictures). The H200 runs of BENCHMARKS.md used one nudge."""
    import jax
    import numpy as np

    import filterviz
    from parity import as_close, displacement_correlation, live_filters, picture_difference, sensitivity

    _, cpu, _ = device_pair()
    cases = []
    for layer, size in config.parity_cases:
        start = np.asarray(filterviz.random_image(jax.random.key(1), size, size))
        with jax.default_device(cpu):
            chosen = live_filters(params_cpu, layer, start, config.parity_filters)
        for index in chosen:

            def run(params, image, index=index, layer=layer):
                ascended = filterviz.ascend(params, layer, [index], image, steps=20, batch_size=1)
                return np.asarray(ascended[0])

            ours = run(params_device, start)
            with jax.default_device(cpu):
                reference = run(params_cpu, start)
                nudged_correlation, nudged_difference = sensitivity(
                    lambda image: run(params_cpu, image), start, reference
                )
                before = float(
                    np.asarray(filterviz.activations(params_cpu, start, layer))[0, ..., index].mean()
                )
                after = float(
                    np.asarray(filterviz.activations(params_cpu, ours, layer))[0, ..., index].mean()
                )
            case = {
                "layer": layer,
                "filter": index,
                "size": size,
                "correlation": finite(displacement_correlation(ours, reference, start)),
                "cpu_nudged_correlation": finite(nudged_correlation),
                "picture_difference": finite(picture_difference(ours, reference)),
                "cpu_nudged_picture_difference": finite(nudged_difference),
                "activation_before": before,
                "activation_after": after,
            }
            case["passed"] = bool(
                None not in (case["correlation"], case["cpu_nudged_correlation"])
                and as_close(
                    case["correlation"], case["picture_difference"],
                    case["cpu_nudged_correlation"], case["cpu_nudged_picture_difference"],
                )
                and after > 2 * before
            )  # fmt: skip
            cases.append(case)
    return cases


def check_method(config: Config, params_device, name: str) -> dict[str, Any]:
    import numpy as np

    import filterviz
    from measures import preset  # MaCo offline: the 1/f law stands in for the published spectrum

    began = time.perf_counter()
    result = filterviz.render(
        params_device,
        filterviz.channel(config.method_layer, [0, 1]),
        method=preset(name, steps=config.method_steps),
        size=config.method_size,
    )
    pixels = np.asarray(result.pixels)
    return {
        "layer": config.method_layer,
        "steps": config.method_steps,
        "seconds_with_compile": time.perf_counter() - began,
        "activations": [finite(float(a)) for a in result.activations],
        "passed": bool(np.isfinite(pixels).all() and np.isfinite(result.activations).all()),
    }


def part_correctness(part: Part, config: Config, weights: str) -> None:
    import jax

    device, cpu, accelerator = device_pair()
    host = host_params(weights)
    params_device, params_cpu = jax.device_put(host, device), jax.device_put(host, cpu)
    if not accelerator:
        part.record(note="no GPU: the device is the CPU, so these compare the CPU with itself")
    activations = part.guarded("activations", check_activations, config, params_device, params_cpu)
    if activations is not None:
        part.record(activations=activations)
        print(f"activations: {activations}", flush=True)
    ascent = part.guarded("ascent parity", check_ascent, config, params_device, params_cpu, needs=10)
    if ascent is not None:
        part.record(ascent=ascent)
        print(f"ascent: {ascent}", flush=True)
    methods = {}
    for name in ("notebook", "lucid", "maco", "octaves"):
        checked = part.guarded(f"method {name}", check_method, config, params_device, name, needs=5)
        if checked is not None:
            methods[name] = checked
            part.record(methods=methods)
            print(f"method {name}: {checked}", flush=True)
