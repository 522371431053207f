"""filterviz on one GPU, checked and timed by one command that fits a short loan of a GPU machine.

    PYTHONPATH=src python bench/gpu_check.py --weights PATH --out DIR           # a GPU: about 8 minutes
    PYTHONPATH=src python bench/gpu_check.py --weights PATH --out DIR --smoke   # tiny sizes, any machine

Parts, in order (``--parts`` picks some):

  env          device, memory, versions; the measured matmul peak in float32, TF32 and bfloat16
  correctness  the GPU against the CPU backend of the same process: activations at five layers, a 20-step
               ascent held to the Keras parity test's self-calibrating bar, every method a few steps
  speed        per sampled layer, the sweep's compiled chunk (128x128, 20 steps) in each precision and at
               three chunk sizes; the one-filter-per-call loop; MFU; each precision's pictures against
               float32's
  sweep        the real job: ``filterviz sweep`` of the whole atlas (4,224 filters) in TF32 and bfloat16,
               twice each (compiling, then from the compilation cache), with the device's busy time;
               then the atlas's device time, layer by layer, from the cached programs
  torch        the same ascent in PyTorch on the same weights, filters and chunk, in each precision
  lucid        the Lucid-method atlas, estimated from one timed chunk of one layer per block
  examples     the dataset-examples pass: 50,000 JPEGs (375x500, 4,096 made here and linked) at 224x224
               through all 13 conv layers, top-9 of all 4,224 filters; the host's decode rate; MFU

Each part runs in a process of its own under a share of ``--budget`` seconds: a crash, a hang or an
out-of-memory in one part is recorded in ``failures`` and the rest still run. A part saves its figures
as it goes, so a part stopped at its limit keeps what it measured. After every part, ``DIR`` holds
``gpu_check.json`` and ``gpu_check.md`` (also printed at the end), ``gpu_check.log`` (every part's
output) and a contact sheet of each precision's real sweep. Without a GPU the parts run on the CPU and
the output says so: the comparisons against the CPU then compare the CPU with itself, and TF32 equals
float32.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))  # the Keras parity test's bar and measures

PARTS = ("env", "correctness", "speed", "sweep", "torch", "lucid", "examples")
# Relative shares of the budget; a part that ends early leaves its time to the later ones.
SHARES = {"env": 20, "correctness": 30, "speed": 55, "sweep": 165, "torch": 20, "lucid": 75, "examples": 95}
PRECISIONS = ("float32", "tf32", "bfloat16")
# The precision the comparisons use on a GPU: TF32 is what a float32 user gets from a tensor-core GPU.
MAIN_PRECISION = "tf32"
REPORT_NAME = "gpu_check"
GRACE_SECONDS = 15  # past its share, a part is killed


@dataclasses.dataclass(frozen=True)
class Config:
    """The sizes of one run: ``FULL`` on a GPU, ``SMOKE`` anywhere in seconds."""

    size: int = 128
    steps: int = 20
    sample_layers: tuple[str, ...] = (
        "block5_conv3",
        "block1_conv2",
        "block3_conv3",
        "block4_conv3",
        "block2_conv2",
    )
    atlas_layers: tuple[str, ...] | None = None  # None: all 13 conv layers
    atlas_filters: str = "all"
    activation_layers: tuple[str, ...] = (
        "block1_conv2",
        "block2_pool",
        "block3_conv3",
        "block4_conv3",
        "block5_conv3",
    )
    activation_size: int = 64
    parity_cases: tuple[tuple[str, int], ...] = (("block2_conv2", 64), ("block5_conv3", 96))
    parity_filters: int = 2
    method_layer: str = "block3_conv1"
    method_size: int = 64
    method_steps: int = 3
    lucid_steps: int = 8
    lucid_layers: tuple[str, ...] = (
        "block5_conv3",
        "block4_conv3",
        "block3_conv3",
        "block2_conv2",
        "block1_conv2",
    )
    atlas_precisions: tuple[str, ...] = ("tf32", "bfloat16")
    lucid_precisions: tuple[str, ...] = ("tf32", "bfloat16")
    loop_filters: int = 2
    peak_size: int = 8192
    repeats: int = 2
    examples_images: int = 50_000
    examples_size: int = 224
    examples_layers: tuple[str, ...] | None = None  # None: all 13 conv layers
    examples_batch: int = 128
    examples_decode_images: int = 4096


FULL = Config()
SMOKE = Config(
    size=16,
    steps=1,
    sample_layers=("block1_conv2",),
    atlas_layers=("block1_conv2",),
    atlas_filters="0-3",
    activation_layers=("block1_conv2", "block1_pool"),
    activation_size=16,
    parity_cases=(("block1_conv2", 16),),
    parity_filters=1,
    method_layer="block1_conv2",
    method_size=32,
    method_steps=1,
    lucid_steps=1,
    lucid_layers=("block1_conv2",),
    loop_filters=1,
    peak_size=128,
    repeats=1,
    examples_images=10,
    examples_size=32,
    examples_layers=("block1_conv1", "block1_conv2"),
    examples_batch=4,
    examples_decode_images=6,
)


# ----------------------------------------------------------------------------------------------------
# Inside a part: its record, saved after every change, and its deadline.


class Part:
    """What one part measured, written to ``<work>/<name>.json`` after every :meth:`record`."""

    def __init__(self, name: str, work: Path, seconds: float):
        self.name, self.work = name, work
        self.stop_at = time.monotonic() + seconds
        self.data: dict[str, Any] = {"failures": [], "skipped": []}

    def record(self, **values: Any) -> None:
        self.data.update(values)
        self.save()

    def save(self) -> None:
        path = self.work / f"{self.name}.json"
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self.data, indent=2, default=_plain))
        os.replace(temporary, path)

    def left(self) -> float:
        return self.stop_at - time.monotonic()

    def guarded(self, what: str, function, *args, needs: float = 0.0, **kwargs) -> Any:
        """``function(*args, **kwargs)``, or None with the failure recorded; skipped when fewer than
        ``needs`` seconds are left."""
        if self.left() < needs:
            self.data["skipped"].append(f"{what}: {self.left():.0f} s left of the part's share")
            self.save()
            return None
        try:
            return function(*args, **kwargs)
        except Exception as error:  # one item's failure must not stop the part
            self.data["failures"].append(
                {"part": self.name, "item": what, "error": f"{type(error).__name__}: {error}"}
            )
            self.save()
            traceback.print_exc()
            return None


def _plain(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _finite(value: float | None) -> float | None:
    # JSON has no NaN: a non-finite figure is recorded as null (and the check that reads it fails).
    import math

    return value if value is not None and math.isfinite(value) else None


def _load(work: Path, name: str) -> dict[str, Any]:
    path = work / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _block(result: Any) -> Any:
    import jax

    return jax.block_until_ready(result)


def _devices():
    """``(device, cpu, accelerator)``: the default device, the CPU device, whether they differ."""
    import jax

    device = jax.devices()[0]
    cpu = jax.devices("cpu")[0]
    return device, cpu, device.platform != "cpu"


def _host_params(weights: str):
    import jax
    import numpy as np

    import filterviz

    return jax.tree.map(np.asarray, filterviz.load_weights(weights))


# ----------------------------------------------------------------------------------------------------
# Part: environment and matmul peaks.


def matmul_peak(precision: str, size: int, repeats: int = 5) -> float:
    """FLOP/s of a ``size``-square matmul on the default device in ``precision`` (best of ``repeats``):
    float32 at full precision, TF32 tensor-core math, or bfloat16 inputs."""
    import jax
    import jax.numpy as jnp

    from filterviz.draw.notebook import matmul_precision

    keys = jax.random.split(jax.random.key(0), 2)
    a, b = (jax.random.normal(key, (size, size), jnp.float32) for key in keys)
    if precision == "bfloat16":
        a, b = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
    with matmul_precision(precision):
        product = jax.jit(jnp.matmul).lower(a, b).compile()
    _block(product(a, b))
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        _block(product(a, b))
        best = min(best, time.perf_counter() - began)
    return 2 * size**3 / best


def versions() -> dict[str, str | None]:
    from importlib import metadata

    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "optax", "numpy", "h5py", "torch"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def nvidia_smi() -> dict[str, str] | None:
    if shutil.which("nvidia-smi") is None:
        return None
    fields = "name,memory.total,driver_version,clocks.max.sm,power.limit"
    done = subprocess.run(
        ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    values = [value.strip() for value in done.stdout.splitlines()[0].split(",")] if done.stdout else []
    return dict(zip(fields.split(","), values, strict=False))


def part_env(part: Part, config: Config, weights: str) -> None:
    import jax

    device, _, accelerator = _devices()
    part.record(
        device=device.device_kind,
        platform=device.platform,
        device_count=jax.device_count(),
        accelerator=accelerator,
        memory_bytes=(device.memory_stats() or {}).get("bytes_limit"),
        versions=versions(),
        host={"cpus": os.cpu_count(), "machine": platform.machine(), "system": platform.platform()},
    )
    part.guarded("nvidia-smi", lambda: part.record(nvidia_smi=nvidia_smi()))
    peaks = {}
    for precision in PRECISIONS:
        peak = part.guarded(f"{precision} matmul peak", matmul_peak, precision, config.peak_size)
        if peak is not None:
            peaks[precision] = peak
            part.record(peaks=peaks)
            print(f"{precision} matmul peak: {peak / 1e12:.1f} TFLOP/s", flush=True)


# ----------------------------------------------------------------------------------------------------
# Part: correctness on the device against the CPU.


def check_activations(config: Config, params_device, params_cpu) -> dict[str, Any]:
    import jax
    import numpy as np

    import filterviz
    from test_keras_parity import relative_error

    _, cpu, _ = _devices()
    size = config.activation_size
    images = np.asarray([filterviz.random_image(jax.random.key(seed), size, size) for seed in range(2)])
    errors = {}
    for layer in config.activation_layers:
        ours = np.asarray(filterviz.activations(params_device, images, layer))
        with jax.default_device(cpu):
            reference = np.asarray(filterviz.activations(params_cpu, images, layer))
        errors[layer] = _finite(relative_error(ours, reference))
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
    from test_keras_parity import displacement_correlation, live_filters, picture_difference, sensitivity

    _, cpu, _ = _devices()
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
                "correlation": _finite(displacement_correlation(ours, reference, start)),
                "cpu_nudged_correlation": _finite(nudged_correlation),
                "picture_difference": _finite(picture_difference(ours, reference)),
                "cpu_nudged_picture_difference": _finite(nudged_difference),
                "activation_before": before,
                "activation_after": after,
            }
            case["passed"] = bool(
                case["correlation"] is not None
                and case["cpu_nudged_correlation"] is not None
                and case["correlation"] >= case["cpu_nudged_correlation"]
                and case["picture_difference"] <= case["cpu_nudged_picture_difference"]
                and after > 2 * before
            )
            cases.append(case)
    return cases


def check_method(config: Config, params_device, name: str) -> dict[str, Any]:
    import numpy as np

    import filterviz

    began = time.perf_counter()
    result = filterviz.render(
        params_device,
        filterviz.channel(config.method_layer, [0, 1]),
        method=name,
        steps=config.method_steps,
        size=config.method_size,
    )
    pixels = np.asarray(result.pixels)
    return {
        "layer": config.method_layer,
        "steps": config.method_steps,
        "seconds_with_compile": time.perf_counter() - began,
        "activations": [_finite(float(a)) for a in result.activations],
        "passed": bool(np.isfinite(pixels).all() and np.isfinite(result.activations).all()),
    }


def part_correctness(part: Part, config: Config, weights: str) -> None:
    import jax

    device, cpu, accelerator = _devices()
    host = _host_params(weights)
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


# ----------------------------------------------------------------------------------------------------
# Part: speed of the sweep's compiled chunk, layer by layer.


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
    from filterviz.sweeps.sharding import ShardedAscent
    from flops import ascent_step_flops
    from sweep_bench import sweep_runner
    from test_keras_parity import live_filters
    from timing import displacement_correlation, time_interleaved

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
            p: _finite(displacement_correlation(results[p], reference, start)) for p in PRECISIONS
        },
        "compared_filters": live,
        "loop_agreement": _finite(
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

    peaks = _load(part.work, "env").get("peaks") or {p: matmul_peak(p, config.peak_size) for p in PRECISIONS}
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


# ----------------------------------------------------------------------------------------------------
# Part: the real sweep, end to end, twice per precision; then the atlas's device time.


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
    from filterviz.sweeps.sharding import ShardedAscent
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
        _block(first.images)  # an untimed run: a program's first run sets up its buffers
        began = time.perf_counter()
        for chunk in ascent.run(layer, filters):
            last = chunk
        _block(last.images)
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

    peaks = _load(part.work, "env").get("peaks") or {}
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


# ----------------------------------------------------------------------------------------------------
# Part: PyTorch on the same work.


def part_torch(part: Part, config: Config, weights: str) -> None:
    import numpy as np

    try:
        import torch
    except ImportError:
        part.record(note="PyTorch is not installed: no PyTorch figures (pip install '.[bench]')")
        return
    import filterviz
    from timing import displacement_correlation
    from torch_reference import notebook_ascent

    cuda = torch.cuda.is_available()
    torch.backends.cudnn.benchmark = True  # PyTorch's fastest convolutions, found in the untimed run
    speed = {row["layer"]: row for row in _load(part.work, "speed").get("rows", [])}
    # Weights only: JAX stays on the CPU in this process, leaving the GPU to PyTorch.
    params = _host_params(weights)
    precisions = PRECISIONS if cuda else ("float32",)
    part.record(
        torch=torch.__version__,
        device=torch.cuda.get_device_name(0) if cuda else "cpu",
        note=None if cuda else "no CUDA: PyTorch ran on the CPU, in float32 only",
        rows=[],
    )
    for layer in config.sample_layers:
        if layer not in speed:
            part.data["skipped"].append(f"{layer}: the speed part has no figures for it")
            continue
        ours = speed[layer]
        saved = np.load(part.work / f"speed_{layer}.npz")
        start, filters = saved["start"], list(range(ours["filters_timed"]))
        row = {"layer": layer, "filters": len(filters), "chunk": ours["default_chunk"], "rates": {}}
        for precision in precisions:
            if part.left() < 5:
                part.data["skipped"].append(f"torch {layer} {precision}: out of time")
                break

            def timed(precision=precision):
                ascend = notebook_ascent(filterviz.network("vgg16"), params, layer, precision)
                first = ascend(filters, start, config.steps, ours["default_chunk"])  # untimed
                best = float("inf")
                for _ in range(config.repeats):
                    began = time.perf_counter()
                    ascend(filters, start, config.steps, ours["default_chunk"])
                    best = min(best, time.perf_counter() - began)
                return best, first

            outcome = part.guarded(f"torch {layer} {precision}", timed)
            if outcome is None:
                continue
            seconds, images = outcome
            row["rates"][precision] = len(filters) * config.steps / seconds
            theirs = images[saved["live"]]
            row.setdefault("agreement_with_ours", {})[precision] = _finite(
                displacement_correlation(theirs, saved[precision], start)
            )
            ours_rate = ours["filter_steps_per_second"][precision]
            row.setdefault("speedup", {})[precision] = ours_rate / row["rates"][precision]
        part.data["rows"].append(row)
        part.save()
        print(f"torch {layer}: {row}", flush=True)


# ----------------------------------------------------------------------------------------------------
# Part: the Lucid-method atlas, estimated from one timed chunk of one layer per block.


def block_of(layer: str) -> str:
    return layer.split("_")[0]


def part_lucid(part: Part, config: Config, weights: str) -> None:
    """One chunk of each sampled layer is compiled (all at once) and timed; every other layer of the
    atlas takes the time per FLOP of its block's sampled layer (``ascent_step_flops`` of the whole
    layer, as the Lucid objective computes every channel)."""
    import filterviz
    from filterviz.core.engine import render_batch
    from flops import ascent_step_flops
    from quality import layer_chunk, layer_seconds_per_filter

    vgg16 = filterviz.network("vgg16")
    params = filterviz.load_weights(weights)
    atlas_layers = config.atlas_layers or vgg16.visual_layers
    sampled = [layer for layer in config.lucid_layers if layer in atlas_layers]
    estimates: dict[str, Any] = {}
    for precision in config.lucid_precisions:
        method = filterviz.get_method("lucid", precision=precision, steps=config.lucid_steps)

        def compile_layer(layer: str, method=method) -> float:
            began = time.perf_counter()
            arguments, settings = layer_chunk(params, method, layer, config.size)
            render_batch.lower(*arguments, **settings).compile()
            return time.perf_counter() - began

        began = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(len(sampled)) as pool:
            compiled = dict(zip(sampled, pool.map(compile_layer, sampled), strict=True))
        estimate: dict[str, Any] = {
            "compile_wall_seconds": time.perf_counter() - began,
            "compile_seconds": compiled,
            "timed": {},
            "layers": {},
        }
        estimates[precision] = estimate
        part.record(estimates=estimates, steps_timed=config.lucid_steps, preset_steps=512)
        for layer in sampled:
            timed = part.guarded(
                f"lucid {precision} {layer}",
                layer_seconds_per_filter,
                params,
                "lucid",
                layer,
                config.size,
                config.lucid_steps,
                precision,
                needs=3,
            )
            if timed is None:
                break
            chunk, per_filter = timed
            estimate["timed"][layer] = {"chunk": chunk, "seconds_per_filter": per_filter}
            part.record(estimates=estimates)
        by_block = {block_of(layer): layer for layer in estimate["timed"]}
        for layer in atlas_layers:
            source = by_block.get(block_of(layer))
            if source is None:
                continue
            scale = ascent_step_flops(
                vgg16, layer, config.size, config.size, full_target=True
            ) / ascent_step_flops(vgg16, source, config.size, config.size, full_target=True)
            estimate["layers"][layer] = {
                "seconds_per_filter": estimate["timed"][source]["seconds_per_filter"] * scale,
                "from": "timed" if layer == source else f"{source}, scaled by FLOPs ({scale:.2f}x)",
            }
        if len(estimate["layers"]) == len(atlas_layers):
            estimate["seconds"] = sum(
                v["seconds_per_filter"] * vgg16.layer(layer).channels
                for layer, v in estimate["layers"].items()
            )
            print(f"lucid atlas {precision}: {estimate['seconds']:.0f} s (estimated)", flush=True)
        part.record(estimates=estimates)


# ----------------------------------------------------------------------------------------------------
# Part: the dataset-examples pass over a large folder of JPEGs.


def _make_photo_folder(folder: Path, count: int, height: int, width: int, unique: int = 4096) -> float:
    """``count`` JPEGs in ``folder``: ``unique`` of them made on every CPU, the rest hard links to those
    (as costly to decode, and quick to make); returns the seconds it took."""
    from examples_bench import make_photos

    folder.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    unique = min(unique, count)
    workers = os.cpu_count() or 1
    step = -(-unique // workers)
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        made = [
            pool.submit(make_photos, folder, min(step, unique - first), height, width, first)
            for first in range(0, unique, step)
        ]
        for future in made:
            future.result()
    for index in range(unique, count):
        os.link(folder / f"{index % unique:05d}.jpg", folder / f"{index:05d}.jpg")
    return time.perf_counter() - began


def part_examples(part: Part, config: Config, weights: str) -> None:
    """Decode-only rate (the host's bound), then the pass itself: compiled first on one batch, then
    timed over the whole folder (decoding threads a batch ahead of the device, no crops written)."""
    import jax

    import filterviz
    from examples_bench import decode_only, forward_flops
    from filterviz.sweeps.examples import find_images

    network = filterviz.network("vgg16")
    layers = list(config.examples_layers or network.visual_layers)
    size, count, batch = config.examples_size, config.examples_images, config.examples_batch
    photos = part.work / "photos"
    height, width = (375, 500) if size >= 128 else (40, 48)
    part.record(images=count, size=size, layers=len(layers), batch=batch, photo=f"{height}x{width} JPEG")
    made = _make_photo_folder(photos, count, height, width)
    warm = part.work / "photos-warm"
    _make_photo_folder(warm, batch, height, width)
    part.record(photo_seconds=made, threads=os.cpu_count())
    paths = find_images(photos)
    sample = paths[: config.examples_decode_images]
    decode = decode_only(network, photos, sample, size, batch, os.cpu_count() or 1)
    began = time.perf_counter()
    decode()
    part.record(decode_images_per_second=len(sample) / (time.perf_counter() - began))
    params = filterviz.load_weights(weights)
    filterviz.examples(params, warm, layers, size=size, batch_size=batch, progress=False)
    began = time.perf_counter()
    filterviz.examples(params, warm, layers, size=size, batch_size=batch, progress=False)
    part.record(one_batch_seconds=time.perf_counter() - began)
    began = time.perf_counter()
    found = filterviz.examples(params, photos, layers, size=size, batch_size=batch, progress=False)
    seconds = time.perf_counter() - began
    flops = forward_flops(network, layers, size) * count
    peak = _load(part.work, "env").get("peaks", {}).get(MAIN_PRECISION)
    full = [record for record in found.records if len(record["hits"]) == 9]
    part.record(
        seconds=seconds,
        images_per_second=count / seconds,
        filters=len(found.records),
        filters_with_9_hits=len(full),
        unreadable=len(found.skipped),
        forward_tflops=flops / seconds / 1e12,
        mfu=flops / seconds / peak if peak else None,
        device=jax.devices()[0].device_kind,
    )
    print(f"examples: {count} images in {seconds:.1f} s ({count / seconds:.0f}/s)", flush=True)


PART_FUNCTIONS = {
    "env": part_env,
    "correctness": part_correctness,
    "speed": part_speed,
    "sweep": part_sweep,
    "torch": part_torch,
    "lucid": part_lucid,
    "examples": part_examples,
}


def run_part(name: str, work: Path, seconds: float, weights: str, config: Config) -> int:
    import filterviz

    os.environ["GPU_CHECK_WORK"] = str(work)
    part = Part(name, work, seconds)
    part.save()
    # Programs of this part are kept on disk too, so a part can compile ahead on threads and reuse.
    filterviz.enable_compilation_cache(work / "cache-parts")
    try:
        PART_FUNCTIONS[name](part, config, weights)
    except Exception as error:
        part.data["failures"].append({"part": name, "error": f"{type(error).__name__}: {error}"})
        part.save()
        traceback.print_exc()
        return 1
    return 0


# ----------------------------------------------------------------------------------------------------
# The report: the figures the targets are read against, as JSON and a Markdown table.

TARGETS = {
    "notebook_atlas_tf32_seconds": 10.0,
    "notebook_atlas_bfloat16_seconds": 5.0,
    "speedup_vs_loop": 100.0,
    "speedup_vs_torch": 1.0,
    "deep_layer_mfu": 0.40,
    "lucid_atlas_seconds": 300.0,
    "examples_seconds": 60.0,
}


def summarize(parts: dict[str, dict[str, Any]], status: dict[str, Any], smoke: bool) -> dict[str, Any]:
    env, speed, sweep_part = parts.get("env", {}), parts.get("speed", {}), parts.get("sweep", {})
    torch_part, lucid = parts.get("torch", {}), parts.get("lucid", {})
    accelerator = bool(env.get("accelerator"))
    report: dict[str, Any] = {
        "device": env.get("device", "unknown"),
        "accelerator": accelerator,
        "smoke": smoke,
        "notes": [],
        "parts": status,
    }
    if not accelerator:
        report["notes"].append(
            "no GPU: every part ran on the CPU; the GPU-against-CPU checks compare the CPU with itself, "
            "TF32 equals float32 and PyTorch ran on the CPU"
        )
    sweeps = sweep_part.get("runs", {})
    report["notebook_atlas_seconds"] = {
        p: run.get("device", {}).get("seconds") for p, run in sweeps.items() if run.get("device")
    }
    report["notebook_atlas_sweep_wall_seconds"] = {
        p: [r["wall_seconds"] for r in run.get("runs", [])] for p, run in sweeps.items()
    }
    report["notebook_atlas_sweep_busy_seconds"] = {
        p: [r["busy_seconds"] for r in run.get("runs", [])] for p, run in sweeps.items()
    }
    estimates = lucid.get("estimates", {})
    report["lucid_atlas_seconds"] = {p: e.get("seconds") for p, e in estimates.items()}
    report["lucid_atlas_estimated"] = True
    rows = speed.get("rows", [])
    report["speedup_vs_loop"] = {row["layer"]: row["speedup_vs_loop"] for row in rows}
    report["speedup_vs_torch"] = {
        row["layer"]: row["speedup"][MAIN_PRECISION if accelerator else "float32"]
        for row in torch_part.get("rows", [])
        if (MAIN_PRECISION if accelerator else "float32") in row.get("speedup", {})
    }
    mfu: dict[str, dict[str, float]] = {}
    for row in rows:
        for precision, value in row["mfu"].items():
            mfu.setdefault(precision, {})[row["layer"]] = value
    for precision, run in sweeps.items():  # every layer of the atlas, from the sweep part
        for layer, figures in run.get("device", {}).get("layers", {}).items():
            if figures.get("mfu") is not None:
                mfu.setdefault(precision, {})[layer] = figures["mfu"]
    report["mfu"] = mfu
    report["peaks"] = env.get("peaks", {})
    examples = parts.get("examples", {})
    report["examples"] = {
        key: examples.get(key)
        for key in (
            "images",
            "size",
            "layers",
            "seconds",
            "images_per_second",
            "decode_images_per_second",
            "mfu",
        )
    }
    report["failures"] = [f for p in parts.values() for f in p.get("failures", [])]
    for name, state in status.items():
        if not state.get("ok", state["status"] == "ok"):
            report["failures"].append({"part": name, "error": state["status"]})
    correctness = parts.get("correctness", {})
    for key, checks in (
        ("activations", [correctness.get("activations")]),
        ("ascent", correctness.get("ascent")),
    ):
        for check in checks or []:
            if check and not check["passed"]:
                report["failures"].append({"part": "correctness", "error": f"{key} check failed: {check}"})
    for name, check in correctness.get("methods", {}).items():
        if not check["passed"]:
            report["failures"].append({"part": "correctness", "error": f"method {name} is not finite"})
    report["targets"] = targets(report)
    if smoke:
        report["notes"].append("smoke run: toy sizes, so the targets are not judged")
        for target in report["targets"]:
            target["met"] = None
    report["details"] = parts
    return report


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    found = []

    def add(name: str, measured: float | None, goal: float, higher_is_better: bool) -> None:
        if measured is None:
            found.append({"target": name, "goal": goal, "measured": None, "met": None})
            return
        met = measured >= goal if higher_is_better else measured <= goal
        ratio = measured / goal if higher_is_better else goal / measured
        found.append({"target": name, "goal": goal, "measured": measured, "met": met, "ratio_to_goal": ratio})

    atlas = report["notebook_atlas_seconds"]
    add(
        "notebook atlas, TF32, device seconds",
        atlas.get("tf32"),
        TARGETS["notebook_atlas_tf32_seconds"],
        False,
    )
    add(
        "notebook atlas, bfloat16, device seconds",
        atlas.get("bfloat16"),
        TARGETS["notebook_atlas_bfloat16_seconds"],
        False,
    )
    loops = report["speedup_vs_loop"]
    add("speed-up over the one-filter loop (worst layer)", min(loops.values(), default=None), 100.0, True)
    torches = report["speedup_vs_torch"]
    add("speed-up over PyTorch (worst layer)", min(torches.values(), default=None), 1.0, True)
    deep = [
        value
        for precision in ("tf32", "bfloat16")
        for layer, value in report["mfu"].get(precision, {}).items()
        if layer.startswith(("block4", "block5"))
    ]
    add(
        "MFU on block4-5, TF32 and bfloat16 (worst)", min(deep, default=None), TARGETS["deep_layer_mfu"], True
    )
    lucid = [v for v in report["lucid_atlas_seconds"].values() if v is not None]
    add("Lucid atlas seconds (best precision, estimated)", min(lucid, default=None), 300.0, False)
    examples = report["examples"]
    full = examples.get("images") == 50_000 and examples.get("size") == 224 and examples.get("layers") == 13
    add(
        "dataset examples, 50,000 images at 224 through 13 layers, seconds",
        examples.get("seconds") if full else None,
        TARGETS["examples_seconds"],
        False,
    )
    return found


def run_label(failure: dict[str, Any]) -> str:
    return f" (run {failure['run']})" if "run" in failure else ""


def markdown(report: dict[str, Any]) -> str:
    def number(value: Any, form: str = "{:.2f}") -> str:
        return "-" if value is None else form.format(value)

    details = report["details"]
    env = details.get("env", {})
    lines = [f"## filterviz on {report['device']}" + (" (smoke run)" if report["smoke"] else ""), ""]
    lines += [f"- {note}" for note in report["notes"]]
    versions_text = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v)
    lines.append(f"- {versions_text}; {env.get('host', {}).get('cpus')} host CPUs")
    if env.get("memory_bytes"):
        lines.append(f"- device memory available to JAX: {env['memory_bytes'] / 2**30:.1f} GiB")
    peaks = report["peaks"]
    lines.append(
        "- measured matmul peak: "
        + ", ".join(f"{p} {v / 1e12:.3g} TFLOP/s" for p, v in peaks.items())
        + f" ({FULL.peak_size if not report['smoke'] else SMOKE.peak_size}-square)"
    )
    lines += ["", "| target | goal | measured | met | measured vs goal |", "|---|---|---|---|---|"]
    for target in report["targets"]:
        lines.append(
            f"| {target['target']} | {target['goal']:g} | {number(target['measured'], '{:.3g}')} | "
            f"{'-' if target['met'] is None else ('yes' if target['met'] else 'no')} | "
            f"{number(target.get('ratio_to_goal'), '{:.2f}x')} |"
        )
    rows = details.get("speed", {}).get("rows", [])
    torch_rows = {row["layer"]: row for row in details.get("torch", {}).get("rows", [])}
    if rows:
        lines += [
            "",
            f"Speed per layer, {details['speed'].get('size')}x{details['speed'].get('size')}, "
            f"{details['speed'].get('steps')} steps, the sweep's compiled chunk (filter-steps/s):",
            "",
            "| layer | chunk | float32 | tf32 | bfloat16 | tf32, other chunks | loop (tf32) | sweep / loop | "
            "torch float32 | torch tf32 | torch bf16 | tf32 / torch tf32 | MFU f32 | MFU tf32 | MFU bf16 | "
            "tf32 vs f32 (corr.) | bf16 vs f32 (corr.) | compile (s) |",
            "|" + "---|" * 18,
        ]
        for row in rows:
            rates = row["filter_steps_per_second"]
            others = ", ".join(
                f"{name.split('@')[1]}: {value:.0f}" for name, value in rates.items() if "@" in name
            )
            theirs = torch_rows.get(row["layer"], {})
            their_rates = theirs.get("rates", {})
            lines.append(
                "| "
                + " | ".join(
                    [
                        row["layer"],
                        str(row["default_chunk"]),
                        *(number(rates.get(p), "{:.0f}") for p in PRECISIONS),
                        others or "-",
                        number(rates.get("loop"), "{:.1f}"),
                        number(row["speedup_vs_loop"], "{:.1f}x"),
                        *(number(their_rates.get(p), "{:.0f}") for p in PRECISIONS),
                        number(theirs.get("speedup", {}).get(MAIN_PRECISION), "{:.2f}x"),
                        *(number(row["mfu"].get(p), "{:.0%}") for p in PRECISIONS),
                        number(row["agreement_with_float32"].get("tf32"), "{:.4f}"),
                        number(row["agreement_with_float32"].get("bfloat16"), "{:.4f}"),
                        number(row["compile_wall_seconds"], "{:.1f}"),
                    ]
                )
                + " |"
            )
    sweeps = details.get("sweep", {}).get("runs", {})
    if sweeps:
        lines += [
            "",
            "The real job, `filterviz sweep` of the atlas, end to end (PNGs and the atlas page):",
            "",
            "| precision | run | cache | wall (s) | device busy (s) | pictures | atlas page | exit |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for precision, run in sweeps.items():
            for index, one in enumerate(run.get("runs", []), start=1):
                lines.append(
                    f"| {precision} | {index} | {one['cache']} | {one['wall_seconds']:.1f} | "
                    f"{number(one['busy_seconds'], '{:.1f}')} | {one['pictures']} | "
                    f"{'yes' if one['atlas_page'] else 'no'} | {one['returncode']} |"
                )
        device_layers = {p: run.get("device", {}).get("layers", {}) for p, run in sweeps.items()}
        layers = list(dict.fromkeys(layer for figures in device_layers.values() for layer in figures))
        if layers:
            precisions = list(device_layers)
            lines += [
                "",
                "The atlas's device time, layer by layer (every filter, programs from the cache):",
                "",
                "| layer | " + " | ".join(f"{p} s | {p} filter-steps/s | {p} MFU" for p in precisions) + " |",
                "|---|" + "---|---|---|" * len(precisions),
            ]
            for layer in layers:
                cells = []
                for p in precisions:
                    figures = device_layers[p].get(layer, {})
                    cells += [
                        number(figures.get("seconds"), "{:.2f}"),
                        number(figures.get("filter_steps_per_second"), "{:.0f}"),
                        number(figures.get("mfu"), "{:.0%}"),
                    ]
                lines.append(f"| {layer} | " + " | ".join(cells) + " |")
            totals = [number(report["notebook_atlas_seconds"].get(p), "{:.2f}") for p in precisions]
            lines.append("| all | " + " | ".join(f"{t} | | " for t in totals) + "|")
    lucid = report["lucid_atlas_seconds"]
    if lucid:
        lines += [
            "",
            "Lucid-method atlas (512 steps), estimated from one timed chunk of one layer per block ",
        ]
        lines[-1] += "(the block's other layers scaled by their FLOPs): "
        lines[-1] += ", ".join(f"{p} {number(v, '{:.0f}')} s" for p, v in lucid.items())
    examples = details.get("examples", {})
    if examples.get("seconds") is not None:
        lines += [
            "",
            f"Dataset examples: {examples['images']} {examples['photo']}s at {examples['size']}x"
            f"{examples['size']} through {examples['layers']} layers, top-9 of {examples['filters']} "
            "filters, "
            f"batches of {examples['batch']}: {examples['seconds']:.1f} s, "
            f"{examples['images_per_second']:.0f} images/s ({number(examples.get('mfu'), '{:.0%}')} of the "
            f"TF32 peak); decoding alone {number(examples.get('decode_images_per_second'), '{:.0f}')} "
            f"images/s on {examples['threads']} threads; one batch {examples['one_batch_seconds']:.2f} s",
        ]
    correctness = details.get("correctness", {})
    if correctness:
        lines += ["", "Correctness against the CPU backend:", ""]
        activations = correctness.get("activations")
        if activations:
            errors = ", ".join(f"{k} {number(v, '{:.1e}')}" for k, v in activations["relative_error"].items())
            lines.append(f"- activations, relative error (bar {activations['bar']:g}): {errors}")
        for case in correctness.get("ascent", []) or []:
            lines.append(
                f"- 20-step ascent {case['layer']} filter {case['filter']}: correlation with the CPU "
                f"{number(case['correlation'], '{:.6f}')} (CPU vs nudged CPU "
                f"{number(case['cpu_nudged_correlation'], '{:.6f}')}), uint8 difference "
                f"{number(case['picture_difference'], '{:.3f}')} (bar "
                f"{number(case['cpu_nudged_picture_difference'], '{:.3f}')}): "
                + ("passed" if case["passed"] else "FAILED")
            )
        for name, check in correctness.get("methods", {}).items():
            lines.append(
                f"- method {name}, {check['steps']} steps: " + ("finite" if check["passed"] else "NOT FINITE")
            )
    lines += [
        "",
        "Parts: "
        + ", ".join(f"{k} {v['status']} ({v['seconds']:.0f} s)" for k, v in report["parts"].items()),
    ]
    if report["failures"]:
        lines += ["", "Failures:", ""] + [
            f"- {f['part']}{run_label(f)}: {f.get('item', '')} {f['error']}"[:500] for f in report["failures"]
        ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------
# The orchestrator.


def write_report(out: Path, work: Path, status: dict[str, Any], smoke: bool) -> dict[str, Any]:
    parts = {name: _load(work, name) for name in status}
    report = summarize(parts, status, smoke)
    (out / f"{REPORT_NAME}.json").write_text(json.dumps(report, indent=2, default=_plain))
    (out / f"{REPORT_NAME}.md").write_text(markdown(report))
    for precision, run in parts.get("sweep", {}).get("runs", {}).items():
        if run.get("sheet") and Path(run["sheet"]).is_file():
            shutil.copyfile(run["sheet"], out / f"sheet_{precision}.png")
    return report


def merge_runs(paths: list[str], out: Path) -> dict[str, Any]:
    """One report from the JSON of several runs on the same device (say, a second run that measured
    what the first had no time for). Per part, a later run's figures for a layer or precision replace
    an earlier run's; every run's failures are kept, each marked with its run."""
    reports = [json.loads(Path(path).read_text()) for path in paths]
    devices = {report["device"] for report in reports}
    if len(devices) != 1:
        raise SystemExit(f"gpu_check: runs on different devices cannot be merged: {sorted(devices)}")
    keyed = {"speed": ("rows", "layer"), "torch": ("rows", "layer")}
    parts: dict[str, dict[str, Any]] = {}
    status: dict[str, Any] = {}
    for run, report in enumerate(reports, start=1):
        for name, data in report["details"].items():
            merged = parts.setdefault(name, {"failures": [], "skipped": []})
            for key, value in data.items():
                if key in ("failures", "skipped"):
                    merged[key] += [
                        {**f, "run": run} if isinstance(f, dict) else f"run {run}: {f}" for f in value
                    ]
                elif name in keyed and key == keyed[name][0]:
                    by_key = {row[keyed[name][1]]: row for row in merged.get(key, [])}
                    by_key.update({row[keyed[name][1]]: row for row in value})
                    merged[key] = list(by_key.values())
                elif isinstance(value, dict) and isinstance(merged.get(key), dict):
                    merged[key] = {**merged[key], **value}  # sweep runs, Lucid estimates: per precision
                else:
                    merged[key] = value
        for name, state in report["parts"].items():
            before = status.get(name, {"status": "", "seconds": 0.0})
            text = f"run {run}: {state['status']}"
            status[name] = {
                "status": f"{before['status']}; {text}" if before["status"] else text,
                "seconds": before["seconds"] + state["seconds"],
                "ok": before.get("ok", True) and state["status"] == "ok",
            }
    report = summarize(parts, status, smoke=False)
    report["notes"].append(f"merged from {len(paths)} runs: {', '.join(Path(p).name for p in paths)}")
    (out / f"{REPORT_NAME}.json").write_text(json.dumps(report, indent=2, default=_plain))
    (out / f"{REPORT_NAME}.md").write_text(markdown(report))
    return report


def start_part(name: str, work: Path, seconds: float, log: Path, arguments: list[str]) -> str:
    """Run one part in a process of its own (and its own process group, so that a part killed at its
    limit takes the sweeps it started with it), with this run's ``arguments``; its output goes to
    ``log``. Returns its status."""
    import signal

    command = [sys.executable, __file__, *arguments]
    command += ["--part", name, "--work", str(work), "--seconds", str(seconds)]
    environment = dict(os.environ)
    if name == "torch":
        environment["JAX_PLATFORMS"] = "cpu"  # the GPU is PyTorch's in that part
    if name == "sweep":
        environment["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # the sweeps it starts need the memory
    with open(log, "a") as output:
        output.write(f"\n===== {name} =====\n")
        output.flush()
        process = subprocess.Popen(
            command, env=environment, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = process.wait(timeout=seconds + GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return f"killed after {seconds + GRACE_SECONDS:.0f} s"
    if code != 0:
        tail = log.read_text()[-600:].strip().splitlines()
        return f"exited with status {code}: {tail[-1] if tail else ''}"
    return "ok"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", help="the VGG16 weights file (.h5)")
    parser.add_argument("--out", required=True, help="folder for gpu_check.json, .md, .log and sheets")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one layer, one step: any machine")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all parts (default 450)")
    parser.add_argument("--parts", default=",".join(PARTS), help="which parts, in order (default all)")
    parser.add_argument("--layers", help="layers the speed and torch parts time (default: one per block)")
    parser.add_argument("--precisions", help="precisions of the sweep part (default tf32,bfloat16)")
    parser.add_argument("--lucid-precisions", help="precisions of the lucid part (default tf32,bfloat16)")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="merge these runs' JSON into one report")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # run one part in this process
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.merge:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        print(markdown(merge_runs(args.merge, Path(args.out))), end="")
        return 0
    if args.weights is None:
        parser.error("--weights is needed to run the parts")
    config = SMOKE if args.smoke else FULL
    if args.layers:
        config = dataclasses.replace(config, sample_layers=tuple(args.layers.split(",")))
    if args.precisions:
        config = dataclasses.replace(config, atlas_precisions=tuple(args.precisions.split(",")))
    if args.lucid_precisions:
        config = dataclasses.replace(config, lucid_precisions=tuple(args.lucid_precisions.split(",")))
    if args.part:
        return run_part(args.part, Path(args.work), args.seconds, args.weights, config)

    chosen = [name.strip() for name in args.parts.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if not Path(args.weights).is_file():
        parser.error(f"no weights file at {args.weights}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="filterviz-gpu-check-"))
    log = out / f"{REPORT_NAME}.log"
    log.write_text("")
    began = time.monotonic()
    status: dict[str, Any] = {}
    try:
        for index, name in enumerate(chosen):
            remaining = args.budget - (time.monotonic() - began)
            later = sum(SHARES[n] for n in chosen[index:])
            seconds = max(10.0, remaining * SHARES[name] / later)
            print(f"[{time.monotonic() - began:5.0f} s] {name}: up to {seconds:.0f} s", flush=True)
            part_began = time.monotonic()
            state = start_part(name, work, seconds, log, argv if argv is not None else sys.argv[1:])
            status[name] = {"status": state, "seconds": time.monotonic() - part_began}
            write_report(out, work, status, args.smoke)
            print(f"[{time.monotonic() - began:5.0f} s] {name}: {state}", flush=True)
        report = write_report(out, work, status, args.smoke)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(markdown(report), end="")
    print(f"\n{REPORT_NAME}.json and .md in {out}; {time.monotonic() - began:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
