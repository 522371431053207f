"""Part ``latency``: the time to the first picture, each case in a fresh process with no compilation cache
(``bench/latency.py``): lowering, XLA compilation (autotuning included), the first and a steady run, per
method, layer and precision, and with XLA's GPU autotuning off (compile time against steady speed).
The slowest to compile come first, so a part stopped at its share keeps the headline figures."""

from __future__ import annotations

from gpu.harness import Config, Part, device_pair


def part_latency(part: Part, config: Config, weights: str) -> None:
    import os

    from latency import cases, run_case

    os.environ.setdefault("FILTERVIZ_WEIGHTS", weights)  # each case's process loads the same file
    _, _, accelerator = device_pair()
    # On a GPU the autotuner times candidate kernels while compiling: level 0 turns it off.
    options = ("", "--xla_gpu_autotune_level=0") if accelerator else ("",)
    methods = ("notebook", "lucid")
    steps = {"notebook": config.steps, "lucid": config.lucid_steps}
    rows: list[dict] = []
    layers, precisions = list(config.latency_layers), list(config.latency_precisions)
    for case in cases(layers, list(methods), precisions, config.size, steps):
        for flags in options:
            what = f"{case['method']} {case['layer']} {case['precision']} {flags or 'default'}"
            row = part.guarded(what, run_case, case, flags, timeout=max(30.0, part.left()), needs=20.0)
            if row is not None:
                rows.append(row)
                part.record(latency=rows)
                print(
                    f"latency {what}: wait {row['wait']:.1f} s (compile {row['compile']:.1f} s)", flush=True
                )
