"""The runtime around a run: the installed version, CPU cores as devices, and the persistent
compilation cache."""

from __future__ import annotations

import contextlib
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import jax

from filterviz.errors import OutputError

try:
    VERSION = metadata.version("filterviz")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    VERSION = "unknown"

CPU_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def split_cpu_into_devices(count: int | None = None) -> int:
    """Ask XLA to present the host's CPU cores as ``count`` devices (default: one per core).

    A sweep then ascends one filter per core at once, each single-threaded, instead of one filter with
    its small convolutions spread over all cores: 10-61% more filters per second on a 2-core CPU
    (BENCHMARKS.md). Only the CPU backend is affected, so it is harmless on a GPU host. It works only
    before JAX starts its backends (call it before anything runs on a device); an ``XLA_FLAGS`` that
    already sets the count is kept. Returns the count asked for.
    """
    count = count or os.cpu_count() or 1
    if CPU_DEVICES_FLAG in os.environ.get("XLA_FLAGS", ""):
        return count  # the count XLA_FLAGS sets stands
    with contextlib.suppress(RuntimeError):  # JAX's backends already started: too late, as documented
        jax.config.update("jax_num_cpu_devices", count)
    return count


def compilation_cache_dir() -> Path:
    """Where filterviz keeps compiled programs: ``$FILTERVIZ_CACHE_DIR``, else ``~/.cache/filterviz/xla``."""
    if os.environ.get("FILTERVIZ_CACHE_DIR"):
        return Path(os.environ["FILTERVIZ_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "filterviz" / "xla"


def enable_compilation_cache(directory: str | os.PathLike[str] | None = None) -> Path:
    """Keep compiled programs on disk, so a second run with the same shapes does not compile again.

    Respects a cache directory already configured for JAX (``JAX_COMPILATION_CACHE_DIR``); otherwise
    uses ``directory`` or :func:`compilation_cache_dir`. Programs are cached however fast they compiled.
    Takes effect for the next compilation, even in a process that has compiled before. Returns the
    directory in use.
    """
    compilation_cache: Any
    try:
        from jax.experimental.compilation_cache import compilation_cache
    except ImportError:  # not every JAX version has the module; the config setting is enough there
        compilation_cache = None
    configured = getattr(jax.config, "jax_compilation_cache_dir", None)
    if configured and directory is None:
        return Path(configured)
    path = Path(directory) if directory is not None else compilation_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(path, f"cannot create the compilation cache ({error.strerror or error})") from None
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    if configured != str(path):
        # JAX decides once per process whether the cache is on; have it decide again (where this
        # JAX version has the call: newer ones read the setting at each compilation).
        reset = getattr(compilation_cache, "reset_cache", None) if compilation_cache else None
        if reset is not None:
            reset()
        jax.config.update("jax_compilation_cache_dir", str(path))
    return path
