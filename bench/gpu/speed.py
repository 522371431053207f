"""Part ``speed``: the sweep's compiled chunk, layer by layer, in each precision and chunk size."""

from __future__ import annotations

import concurrent.futures
import os
import time
from pathlib import Path
from typing import Any

from gpu.harness import (
    MAIN_PRECISION,
    PRECISIONS,
    Config,
    Part,
    finite,
    load_part,
)
from measures import measure_peak_flops


def chunk_sizes(default: int) -> list[int]:
    """The default chunk and two others: a quarter and half of it (or 2 and 4 filters if it is 1)."""
    if default >= 4:
        return sorted({default // 4, default // 2, default})
    return sorted({default, 2, 4})


def compile_all(programs: list[tuple[Any, str, int]], threads: int) -> dict[str, float]:
    """Compile every ``(ascent, layer, size)`` program at once on ``threads`` host threads; returns the
    wall seconds each took (the programs are then ready for ``ascent.run``)."""

    def one(ascent, layer: str, size: int) -> float:
        began = time.perf_counter()
        ascent.program(layer, size)
        return time.perf_counter() - began

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        futures = {f"{a.precision}@{size}": pool.submit(one, a, layer, size) for a, layer, size in programs}
        return {name: future.result() for name, future in futures.items()}


def speed_layer(config: Config, params, start, layer: str, peaks: dict[str, float]) -> dict[str, Any]:
    import numpy as np

    import filterviz
    from ascent_bench import make_loop
    from filterviz.core.checks import default_batch_size
    from filterviz.core.methods import notebook_method
    from filterviz.sweeps.filter_chunks import ShardedAscent
    from flops import ascent_step_flops
    from measures import time_interleaved
    from parity import displacement_correlation, live_filters
    from sweep_bench import sweep_runner

    vgg16 = filterviz.network("vgg16")
    channels = vgg16.layer(layer).channels
    default = default_batch_size(vgg16, layer, config.size, config.size)
    sizes = [size for size in chunk_sizes(default) if size <= channels]
    count = min(channels, max(sizes))
    filters = np.arange(count, dtype=np.int32)
    ascents = {}
    for precision in PRECISIONS:
        ascents[precision] = ShardedAscent(
            vgg16,
            params,
            notebook_method(config.steps, precision=precision),
            start,
            size=(config.size, config.size),
            batch_size=min(default, count),
        )
    for size in sizes:
        if size != min(default, count):
            ascents[f"{MAIN_PRECISION}@{size}"] = ShardedAscent(
                vgg16,
                params,
                notebook_method(config.steps, precision=MAIN_PRECISION),
                start,
                size=(config.size, config.size),
                batch_size=size,
            )
    programs = [(a, layer, a.chunk_size(layer, count)) for a in ascents.values()]
    began = time.perf_counter()
    compile_seconds = compile_all(programs, threads=len(programs))
    compile_wall = time.perf_counter() - began
    runners = {name: sweep_runner(ascent, layer, filters) for name, ascent in ascents.items()}
    work = dict.fromkeys(runners, count * config.steps)
    # Comparisons need filters that respond to the start: a dead filter's picture does not move.
    live = [index for index in live_filters(params, layer, start, 4) if index < count] or [0]
    loop_filters = live[: config.loop_filters]
    loop = make_loop(vgg16, params, layer, MAIN_PRECISION)
    runners["loop"] = lambda: loop(loop_filters, start, config.steps)
    work["loop"] = len(loop_filters) * config.steps
    seconds, results = time_interleaved(runners, config.repeats)
    rates = {name: work[name] / seconds[name] for name in runners}
    flops = ascent_step_flops(vgg16, layer, config.size, config.size)
    reference = results["float32"]
    row = {
        "layer": layer,
        "channels": channels,
        "filters_timed": count,
        "default_chunk": min(default, count),
        "chunk_sizes": sizes,
        "flops_per_filter_step": flops,
        "filter_steps_per_second": rates,
        "compile_seconds": compile_seconds,
        "compile_wall_seconds": compile_wall,
        "speedup_vs_loop": rates[MAIN_PRECISION] / rates["loop"],
        "mfu": {p: flops * rates[p] / peaks[p] for p in PRECISIONS if p in peaks},
        "agreement_with_float32": {
            p: finite(displacement_correlation(results[p], reference, start)) for p in PRECISIONS
        },
        "compared_filters": live,
        "loop_agreement": finite(
            displacement_correlation(results["loop"], results[MAIN_PRECISION][loop_filters], start)
        ),
    }
    np.savez(  # the live filters' pictures, for the PyTorch part to compare with
        Path(os.environ["GPU_CHECK_WORK"]) / f"speed_{layer}.npz",
        start=start,
        live=np.asarray(live),
        **{p: results[p][live] for p in PRECISIONS},
    )
    return row


def part_speed(part: Part, config: Config, weights: str) -> None:
    import jax
    import numpy as np

    import filterviz

    peaks = load_part(part.work, "env").get("peaks")
    peaks = peaks or {p: measure_peak_flops(config.peak_size, 5, p) for p in PRECISIONS}
    params = filterviz.load_weights(weights)
    start = np.asarray(filterviz.random_image(jax.random.key(0), config.size, config.size))
    rows = []
    for layer in config.sample_layers:
        row = part.guarded(f"speed {layer}", speed_layer, config, params, start, layer, peaks, needs=15)
        if row is not None:
            rows.append(row)
            part.record(rows=rows, size=config.size, steps=config.steps, main_precision=MAIN_PRECISION)
            rates = ", ".join(f"{k} {v:.1f}" for k, v in row["filter_steps_per_second"].items())
            print(f"{layer}: {rates} filter-steps/s; compile {row['compile_wall_seconds']:.1f} s", flush=True)
