"""Time to the first picture: where the latency of a compiled ascent goes, per method, layer and precision.

Each case runs in a fresh process with no compilation cache, as a user's first call does, and times:

  lower    tracing the ascent and lowering it to StableHLO (``render_batch.lower``)
  compile  XLA's compilation of that program (``.compile()``; on a GPU, autotuning included)
  first    the first run of the compiled program (one chunk of filters, to the host)
  steady   a later run of the same program
  wait     lower + compile + first: what the user waits for the first picture

The program is the one ``filterviz.render`` / ``filterviz.ascend`` builds (the same :class:`Ascent`), for
one chunk of the default size on this device (with or without a progress bar: the bar counts chunks
from the host, so the program is the same). ``--xla-flags`` compares compile options, e.g.
``--xla_backend_optimization_level=0`` on the CPU or ``--xla_gpu_autotune_level=0`` on a GPU: each
setting is a row of its own, measured the same way.

    PYTHONPATH=src python bench/latency.py                       # VGG16: notebook and lucid, 3 layers
    PYTHONPATH=src python bench/latency.py --xla-flags=,--xla_backend_optimization_level=0
    PYTHONPATH=src python bench/latency.py --cached              # and again from a compilation cache
    PYTHONPATH=src python bench/latency.py --smoke               # one tiny case, any machine
    PYTHONPATH=src python bench/latency.py --api render,ascend   # the public calls, first minus later

``--api`` times what the user waits for: the first ``filterviz.render`` (or ``ascend``) of a fresh process
minus a later call of the same, with every program JAX compiled on the way (from ``jax.log_compiles``),
the seconds spent tracing and lowering, and the ascent's compile apart from the others'.

``--cached`` runs each case a second time, in another fresh process that finds the first one's program in
a persistent compilation cache (``filterviz.enable_compilation_cache``): its ``compile`` is then the load,
and ``cache MB`` what the program takes on disk. That is the trade a notebook user makes by turning the
cache on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
PHASES = ("lower", "compile", "first", "steady", "wait")


def measure_case(case: dict[str, Any]) -> dict[str, Any]:
    """The phases of one case, in this process (call it in a fresh one): ``{phase: seconds}``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import filterviz
    from filterviz.core.ascent_checks import default_chunk
    from filterviz.core.engine import Ascent, Tunables, filter_keys, render_batch
    from filterviz.core.methods import notebook_method

    sys.path.insert(0, str(BENCH))
    from filterviz.networks.weights import find_weights
    from measures import preset

    if case.get("cache"):
        filterviz.enable_compilation_cache(case["cache"])
    network = filterviz.network("vgg16")
    path = find_weights()  # the real weights where they are; the timing does not depend on the values
    params = filterviz.load_weights(path) if path is not None else network.init(jax.random.key(0))
    name, layer, size, steps = case["method"], case["layer"], case["size"], case["steps"]
    if name == "notebook":
        method = notebook_method(steps, precision=case["precision"])
    else:
        method = preset(name, steps=steps, precision=case["precision"])
    method, rate = method.resolved(network).split_rate()
    chunk = case.get("chunk") or default_chunk(network, method, layer, size, size)
    ascent = Ascent(network, method, (size, size))
    indices = np.arange(chunk) % network.layer(layer).channels
    objective = filterviz.channel(layer, indices)
    start = None if name != "notebook" else filterviz.random_image(jax.random.key(0), size, size)
    tunables = Tunables(None if rate is None else jnp.float32(rate))
    arguments = (params, objective, start, filter_keys(0, indices), tunables)
    began = time.perf_counter()
    lowered = render_batch.lower(ascent, *arguments)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    jax.block_until_ready(compiled(*arguments))
    first_at = time.perf_counter()
    jax.block_until_ready(compiled(*arguments))
    steady = time.perf_counter() - first_at
    times = {
        "lower": lowered_at - began,
        "compile": compiled_at - lowered_at,
        "first": first_at - compiled_at,
        "steady": steady,
    }
    times["wait"] = times["lower"] + times["compile"] + times["first"]
    device = jax.devices()[0]
    return {**case, "chunk": chunk, "device": device.device_kind, "platform": device.platform, **times}


def measure_call(case: dict[str, Any]) -> dict[str, Any]:
    """A first public call (``case["api"]``: ``render`` or ``ascend``) minus a later one in this process,
    and where the difference went, from JAX's own log of every program traced, lowered and compiled."""
    import logging

    import jax

    import filterviz
    from filterviz.networks.weights import find_weights

    path = find_weights()
    params = (
        filterviz.load_weights(path)
        if path is not None
        else filterviz.network("vgg16").init(jax.random.key(0))
    )
    jax.block_until_ready(params)
    layer, size, steps, count = case["layer"], case["size"], case["steps"], case.get("filters", 4)
    start = filterviz.random_image(jax.random.key(1), size, size)

    def call() -> None:
        if case["api"] == "ascend":
            jax.block_until_ready(filterviz.ascend(params, layer, range(count), start, steps=steps))
        else:
            objective = filterviz.channel(layer, range(count))
            filterviz.render(params, objective, method=case["method"], size=size, steps=steps, progress=False)

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("jax").addHandler(handler)
    with jax.log_compiles(True):
        began = time.perf_counter()
        call()
        first = time.perf_counter() - began
    logging.getLogger("jax").removeHandler(handler)
    began = time.perf_counter()
    call()
    later = time.perf_counter() - began
    return {**case, "first": first, "later": later, "wait": first - later, **compile_log(records)}


def compile_log(messages: list[str]) -> dict[str, Any]:
    """JAX's ``log_compiles`` messages summed: programs compiled (name: seconds), and the seconds spent
    tracing, lowering and compiling, the main program (the ascent) apart."""
    import re

    found = {"programs": {}, "tracing": 0.0, "lowering": 0.0, "compile_main": 0.0, "compile_others": 0.0}
    for message in messages:
        seconds = re.search(r" in ([0-9.e-]+) sec", message)
        if not seconds:
            continue
        value = float(seconds.group(1))
        if message.startswith("Finished tracing"):
            found["tracing"] += value
        elif message.startswith("Finished jaxpr to MLIR"):
            found["lowering"] += value
        elif message.startswith("Finished XLA compilation of"):
            name = re.search(r"compilation of (?:jit\()?([^) ]+)", message).group(1)  # type: ignore[union-attr]
            found["programs"][name] = found["programs"].get(name, 0.0) + value
            found["compile_main" if name == "render_and_measure" else "compile_others"] += value
    found["program_count"] = len(found["programs"])
    return found


def run_case(case: dict[str, Any], xla_flags: str = "", timeout: float = 600.0) -> dict[str, Any]:
    """:func:`measure_case` in a fresh process with ``xla_flags`` added, and no compilation cache but the
    one ``case["cache"]`` names, if any."""
    environment = {key: value for key, value in os.environ.items() if key != "JAX_COMPILATION_CACHE_DIR"}
    environment["XLA_FLAGS"] = " ".join(filter(None, (os.environ.get("XLA_FLAGS", ""), xla_flags)))
    if not case.get("cache"):
        environment["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    environment["FILTERVIZ_PROGRAM_CACHE"] = case.get("program_cache", "off")  # filterviz's own store
    command = [sys.executable, __file__, "--case", json.dumps(case)]
    done = subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"case {case} failed: {done.stderr.strip().splitlines()[-1:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "xla_flags": xla_flags}


def cold_and_cached(case: dict[str, Any], xla_flags: str = "") -> list[dict[str, Any]]:
    """``case`` run twice in fresh processes sharing a new cache folder: compiled, then loaded from it."""
    with tempfile.TemporaryDirectory(prefix="filterviz-latency-") as folder:
        cold = run_case({**case, "cache": folder}, xla_flags)
        size = sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())
        cached = run_case({**case, "cache": folder}, xla_flags)
    return [{**cold, "run": "cold"}, {**cached, "run": "cached", "cache_mb": size / 1e6}]


def cold_and_kept(case: dict[str, Any]) -> list[dict[str, Any]]:
    """A first call in a fresh process with filterviz's program store empty, then in another fresh
    process that finds the first one's programs there (the user's second session)."""
    with tempfile.TemporaryDirectory(prefix="filterviz-programs-") as folder:
        cold = run_case({**case, "program_cache": folder})
        kept = run_case({**case, "program_cache": folder})
    return [{**cold, "run": "empty"}, {**kept, "run": "kept"}]


def cases(layers: list[str], methods: list[str], precisions: list[str], size: int, steps: dict):
    """Every (layer, method, precision) case, in that order."""
    return [
        {
            "layer": layer,
            "method": method,
            "precision": precision,
            "size": size,
            "steps": steps[method],
        }
        for method in methods
        for layer in layers
        for precision in precisions
    ]


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table: the case, then each phase in seconds."""
    cached = any("run" in row for row in rows)
    extra = ["run", "cache MB"] if cached else []
    header = ["method", "layer", "precision", "XLA flags", "chunk", *extra, *(f"{p} (s)" for p in PHASES)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["method"], row["layer"], row["precision"], row["xla_flags"] or "(default)", row["chunk"]]
        if cached:
            cells += [row.get("run", ""), f"{row['cache_mb']:.1f}" if "cache_mb" in row else ""]
        cells += [f"{row[p]:.2f}" for p in PHASES]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines)


def first_calls(args: argparse.Namespace) -> int:
    """``--api``: each public call's first call minus a later one, in a fresh process per case."""
    rows = []
    for api in args.api.split(","):
        for layer in args.layers.split(","):
            for method in args.methods.split(",") if api == "render" else ["notebook"]:
                case = {"api": api, "layer": layer, "method": method, "size": args.size, "steps": args.steps}
                for row in cold_and_kept(case):
                    rows.append(row)
                    print(f"{api} {method} {layer} {row['run']}: wait {row['wait']:.2f} s, "
                          f"{row['program_count']} programs {row['programs']}", flush=True)  # fmt: skip
    header = ["call", "method", "layer", "store", "first (s)", "later (s)", "wait (s)", "programs"]
    header += ["tracing (s)", "lowering (s)", "main compile (s)", "other compiles (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    keys = (
        "first",
        "later",
        "wait",
        "program_count",
        "tracing",
        "lowering",
        "compile_main",
        "compile_others",
    )
    for row in rows:
        cells = [row["api"], row["method"], row["layer"], row["run"], *(row[key] for key in keys)]
        lines.append("| " + " | ".join(f"{c:.2f}" if isinstance(c, float) else str(c) for c in cells) + " |")
    print(f"\n{platform.machine()}, {args.size}x{args.size}, {args.steps} steps, 4 filters\n")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", default="block1_conv2,block3_conv3,block5_conv3")
    parser.add_argument("--methods", default="notebook,lucid")
    parser.add_argument("--precisions", default="float32")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4, help="steps of every method (the loop compiles once)")
    parser.add_argument("--xla-flags", default="", help="comma-separated settings to compare, '' the default")
    parser.add_argument("--cached", action="store_true", help="each case again, loaded from a cache")
    parser.add_argument("--smoke", action="store_true", help="one tiny case")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--api", help="time first calls of these instead (render,ascend), as a user waits")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # measure one case in this process
    args = parser.parse_args(argv)
    if args.case:
        case = json.loads(args.case)
        print(json.dumps(measure_call(case) if "api" in case else measure_case(case)))
        return 0
    if args.api:
        return first_calls(args)
    if args.smoke:
        args.layers, args.methods, args.size, args.steps = "block1_conv2", "notebook,lucid", 16, 1
    steps = dict.fromkeys(args.methods.split(","), args.steps)
    layers, methods, precisions = (text.split(",") for text in (args.layers, args.methods, args.precisions))
    chosen = cases(layers, methods, precisions, args.size, steps)
    rows = []
    for case in chosen:
        for flags in args.xla_flags.split(","):
            measured = cold_and_cached(case, flags) if args.cached else [run_case(case, flags)]
            rows.extend(measured)
            for row in measured:
                timings = ", ".join(f"{p} {row[p]:.2f} s" for p in PHASES)
                what = f"{row['method']} {row['layer']} {row['precision']} [{flags or 'default'}]"
                print(f"{what} {row.get('run', '')}: {timings}", flush=True)
    device = f"{rows[0]['device']} ({rows[0]['platform']}, {platform.machine()})"
    print(f"\n{device}, {args.size}x{args.size}, {args.steps} steps\n")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
