"""Part ``sweep``: the real ``filterviz sweep`` of the atlas, twice per precision, then its device time."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gpu.harness import (
    Config,
    Part,
    load_part,
    ready,
)


class BusyMeter:
    """The device's busy seconds over a span, integrated from NVML's utilisation (sampled every 50 ms):
    the fraction of time a kernel was running. None where NVML is missing (no NVIDIA GPU)."""

    def __init__(self):
        self.busy: float | None = None
        self._stop = threading.Event()
        self._thread = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._utilization = pynvml.nvmlDeviceGetUtilizationRates
        except Exception:  # no NVML here: busy time stays unknown
            self._handle = None

    def __enter__(self) -> BusyMeter:
        if self._handle is not None:
            self.busy = 0.0
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.05):
            now = time.monotonic()
            self.busy += self._utilization(self._handle).gpu / 100 * (now - last)
            last = now

    def __exit__(self, *exception: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def cli_sweep(config: Config, weights: str, precision: str, folder: Path, cache: Path, timeout: float):
    command = [sys.executable, "-m", "filterviz", "sweep", "--out", str(folder), "--precision", precision]
    command += ["--size", str(config.size), "--steps", str(config.steps), "--weights", weights, "--quiet"]
    command += ["--filters", config.atlas_filters]
    if config.atlas_layers is not None:
        command += ["--layers", ",".join(config.atlas_layers)]
    environment = {**os.environ, "FILTERVIZ_CACHE_DIR": str(cache)}
    began = time.perf_counter()
    with BusyMeter() as meter:
        done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - began
    manifest = folder / "manifest.jsonl"
    entries = [json.loads(line) for line in manifest.read_text().splitlines()] if manifest.is_file() else []
    return {
        "command": " ".join(command[1:]),
        "returncode": done.returncode,
        "wall_seconds": wall,
        "busy_seconds": meter.busy,
        "pictures": len(entries),
        "atlas_page": (folder / "index.html").is_file(),
        "output_tail": (done.stdout + done.stderr)[-2000:],
    }, entries


def picture_digest(folder: Path, entries: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: (e["layer"], e["filter"])):
        digest.update((folder / entry["png"]).read_bytes())
    return digest.hexdigest()


def device_atlas(config: Config, params, precision: str, peaks: dict[str, float], part: Part):
    """The atlas's compute alone, layer by layer (every filter; programs from the compilation cache,
    each run once untimed first): seconds and filter-steps/s per layer, and MFU."""
    import jax
    import numpy as np

    import filterviz
    from filterviz.core.methods import notebook_method
    from filterviz.sweeps.filter_chunks import ShardedAscent
    from flops import ascent_step_flops

    vgg16 = filterviz.network("vgg16")
    start = np.asarray(filterviz.random_image(jax.random.key(0), config.size, config.size))
    method = notebook_method(config.steps, precision=precision)
    ascent = ShardedAscent(vgg16, params, method, start, size=(config.size, config.size))
    layers = config.atlas_layers or vgg16.visual_layers
    plan = []
    for layer in layers:
        channels = vgg16.layer(layer).channels
        count = channels if config.atlas_filters == "all" else min(channels, 4)
        plan.append((layer, np.arange(count, dtype=np.int32)))
    began = time.perf_counter()
    ascent.compile_ahead([(layer, len(filters)) for layer, filters in plan], 8).shutdown(wait=True)
    load_seconds = time.perf_counter() - began
    result = {"program_load_seconds": load_seconds, "layers": {}}
    for layer, filters in plan:
        if part.left() < 5:
            part.data["skipped"].append(f"{precision} device atlas from {layer} on: out of time")
            break
        first = next(iter(ascent.run(layer, filters[: ascent.chunk_size(layer, len(filters))])))
        ready(first.images)  # an untimed run: a program's first run sets up its buffers
        began = time.perf_counter()
        for chunk in ascent.run(layer, filters):
            last = chunk
        ready(last.images)
        seconds = time.perf_counter() - began
        rate = len(filters) * config.steps / seconds
        flops = ascent_step_flops(vgg16, layer, config.size, config.size)
        result["layers"][layer] = {
            "filters": len(filters),
            "seconds": seconds,
            "filter_steps_per_second": rate,
            "mfu": flops * rate / peaks[precision] if precision in peaks else None,
        }
    done = len(result["layers"]) == len(plan)
    result["complete"] = done
    result["seconds"] = sum(v["seconds"] for v in result["layers"].values()) if done else None
    return result


def part_sweep(part: Part, config: Config, weights: str) -> None:
    import filterviz

    peaks = load_part(part.work, "env").get("peaks") or {}
    runs: dict[str, Any] = {}
    params = None
    for precision in config.atlas_precisions:
        cache = part.work / f"cache-{precision}"
        shutil.rmtree(cache, ignore_errors=True)
        runs[precision] = {"runs": []}
        digests = []
        for attempt in (1, 2):
            folder = part.work / f"atlas-{precision}-{attempt}"
            shutil.rmtree(folder, ignore_errors=True)
            outcome = part.guarded(
                f"sweep {precision} run {attempt}",
                cli_sweep,
                config,
                weights,
                precision,
                folder,
                cache,
                timeout=max(1.0, part.left() - 5),
                needs=10,
            )
            if outcome is None:
                break
            run, entries = outcome
            run["cache"] = "empty: compiles" if attempt == 1 else "warm: programs from the cache"
            runs[precision]["runs"].append(run)
            if run["returncode"] == 0 and entries:
                digests.append(picture_digest(folder, entries))
                shown = "block4_conv1" if config.atlas_layers is None else entries[-1]["layer"]
                sheet = folder / "sheets" / f"{shown}.png"
                if sheet.is_file():
                    runs[precision]["sheet"] = str(sheet)
            part.record(runs=runs)
            print(f"sweep {precision} run {attempt}: {json.dumps(run)[:400]}", flush=True)
        if len(digests) == 2:
            runs[precision]["same_pictures_both_runs"] = digests[0] == digests[1]
        if not cache.is_dir():
            continue
        # The atlas's compute alone, in this process (which leaves the GPU's memory to the next sweep:
        # the orchestrator turns JAX's preallocation off here).
        params = params if params is not None else filterviz.load_weights(weights)
        filterviz.enable_compilation_cache(cache)
        atlas = part.guarded(
            f"device atlas {precision}", device_atlas, config, params, precision, peaks, part, needs=10
        )
        if atlas is not None:
            runs[precision]["device"] = atlas
            part.record(runs=runs)
            print(f"device atlas {precision}: {atlas.get('seconds')} s", flush=True)
