"""Part ``env``: the device, its memory, versions, and the measured matmul peak in each precision."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess

from gpu.harness import (
    PRECISIONS,
    Config,
    Part,
    device_pair,
)
from measures import measure_peak_flops


def versions() -> dict[str, str | None]:
    from importlib import metadata

    found: dict[str, str | None] = {"python": platform.python_version()}
    packages = ("jax", "jaxlib", "flax", "optax", "numpy", "h5py", "torch", "torchvision", "torchax")
    for name in (*packages, "torch-lucent", "kornia", "umap-learn"):
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

    device, _, accelerator = device_pair()
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
        peak = part.guarded(f"{precision} matmul peak", measure_peak_flops, config.peak_size, 5, precision)
        if peak is not None:
            peaks[precision] = peak
            part.record(peaks=peaks)
            print(f"{precision} matmul peak: {peak / 1e12:.1f} TFLOP/s", flush=True)
