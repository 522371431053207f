"""filterviz's own store of compiled programs, kept between sessions.

A fresh process spends most of its first picture compiling (seconds on a CPU). Where JAX's persistent
cache is off (the user's choice for the whole process: the CLI turns it on, a notebook usually leaves it
off), filterviz keeps its own programs here instead, and only its own: :func:`kept` wraps a jitted
function, lowers it on the first call with given shapes, and loads the compiled program from disk when
an earlier session left it there.

An entry is named by a fingerprint of the lowered program, the JAX and jaxlib versions, the backend, the
devices and the host's CPU. It is signed with a key kept in the folder, so a file that is truncated,
damaged, copied from another folder or machine, or written by another JAX version is ignored and the
program compiled afresh: nothing is loaded that this store did not write. The folder keeps under a size
limit by dropping the entries used longest ago.

Settings, read at each first call: ``FILTERVIZ_PROGRAM_CACHE`` is ``off`` (or ``0``) to turn the store
off, or a folder (default ``~/.cache/filterviz/programs``); ``FILTERVIZ_PROGRAM_CACHE_MB`` is its limit
(default 1024).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import inspect
import json
import os
import platform
import secrets
import stat
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import jax.extend
import jaxlib
import numpy as np

MAGIC = b"filterviz-program 1\n"
SUFFIX = ".program"
DEFAULT_MEGABYTES = 1024
KEY_FILE = "signing-key"
MEMORY = 64
"""Programs each kept function holds in memory (the ones used longest ago are let go: a later call
loads them from the store again)."""


def cache_folder() -> Path | None:
    """The store's folder, or ``None`` where ``FILTERVIZ_PROGRAM_CACHE`` turns it off."""
    setting = os.environ.get("FILTERVIZ_PROGRAM_CACHE", "").strip()
    if setting.lower() in ("off", "0", "false", "no"):
        return None
    if setting:
        return Path(setting)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "filterviz" / "programs"


def limit_bytes() -> int:
    """The store's size limit: ``FILTERVIZ_PROGRAM_CACHE_MB`` megabytes (default 1024)."""
    try:
        return int(float(os.environ.get("FILTERVIZ_PROGRAM_CACHE_MB", DEFAULT_MEGABYTES)) * 2**20)
    except ValueError:
        return DEFAULT_MEGABYTES * 2**20


@functools.cache
def _host() -> str:
    # What a CPU program is compiled for: the machine and its instruction-set flags (an executable built
    # for one CPU may not run on another that shares this home folder).
    flags = ""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        flags = next((line for line in lines if line.startswith(("flags", "Features"))), "")
    return f"{platform.machine()} {platform.processor()} {hashlib.sha256(flags.encode()).hexdigest()}"


def fingerprint(lowered: jax.stages.Lowered, devices: Iterable[jax.Device]) -> dict[str, str]:
    """What names a program: its lowered text, the versions, backend, devices and host it is built for."""
    backend = jax.extend.backend.get_backend()
    return {
        "program": hashlib.sha256(lowered.as_text().encode()).hexdigest(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "backend": f"{backend.platform} {backend.platform_version}",
        "devices": ",".join(f"{device.id}:{device.device_kind}" for device in devices),
        "host": _host(),
        # Flags change what XLA builds from the same text (the suite's optimisation level, a TPU's).
        "flags": " ".join(os.environ.get(name, "") for name in ("XLA_FLAGS", "LIBTPU_INIT_ARGS")),
    }


class ProgramStore:
    """Signed program files in one folder, under a size limit. Any failure to read or write is a miss."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.folder, self.limit = folder, limit
        self._key: bytes | None = None

    def usable(self) -> bool:
        """Whether the folder can be made or is already this user's own and private to them."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            state = self.folder.stat()
        except OSError:
            return False
        own = not hasattr(os, "getuid") or state.st_uid == os.getuid()
        return own and not state.st_mode & (stat.S_IWGRP | stat.S_IWOTH)

    def signing_key(self) -> bytes:
        """The folder's secret, made once (readable by its owner only)."""
        if self._key is None:
            path = self.folder / KEY_FILE
            with contextlib.suppress(FileExistsError):
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(secrets.token_bytes(32))
            self._key = path.read_bytes()
            if len(self._key) != 32:
                raise OSError(f"{path} is not a signing key")
        return self._key

    def path(self, name: dict[str, str]) -> Path:
        digest = hashlib.sha256(json.dumps(name, sort_keys=True).encode()).hexdigest()
        return self.folder / f"{digest[:40]}{SUFFIX}"

    def load(self, name: dict[str, str]) -> bytes | None:
        """The payload saved under ``name``, or ``None`` when absent, damaged, foreign or unsigned."""
        try:
            path = self.path(name)
            data, key = path.read_bytes(), self.signing_key()
        except OSError:
            return None
        head, _, rest = data.partition(b"\n\n")
        signature, payload = rest[:32], rest[32:]
        if not head.startswith(MAGIC) or len(signature) != 32:
            return None
        if not hmac.compare_digest(signature, hmac.new(key, head + payload, hashlib.sha256).digest()):
            return None
        if head[len(MAGIC) :] != json.dumps(name, sort_keys=True).encode():
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # used now: the last to be dropped when the folder is over its limit
        return payload

    def save(self, name: dict[str, str], payload: bytes) -> None:
        """Write ``payload`` under ``name`` whole (a temporary file renamed), then keep to the limit."""
        head = MAGIC + json.dumps(name, sort_keys=True).encode()
        try:
            signature = hmac.new(self.signing_key(), head + payload, hashlib.sha256).digest()
            path = self.path(name)
            temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            temporary.write_bytes(head + b"\n\n" + signature + payload)
            os.replace(temporary, path)
        except OSError:
            with contextlib.suppress(OSError, UnboundLocalError):
                temporary.unlink()
            return
        self.trim()

    def trim(self) -> None:
        """Drop the entries used longest ago until the folder is within its limit (only ``*.program``)."""
        entries = []
        for path in self.folder.glob(f"*{SUFFIX}"):
            with contextlib.suppress(OSError):
                state = path.stat()
                entries.append((state.st_mtime, state.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.limit:
                break
            with contextlib.suppress(OSError):
                path.unlink()
            total -= size


def _leaf_signature(leaf: Any) -> tuple[Any, ...]:
    # What decides which program an argument leaf needs: its shape, type and where it lives.
    if isinstance(leaf, jax.Array):
        sharding = leaf.sharding if leaf.committed else None
        return (leaf.shape, leaf.dtype, getattr(leaf, "weak_type", False), sharding)
    if isinstance(leaf, np.ndarray | np.generic):
        return (leaf.shape, leaf.dtype)
    return (type(leaf),)


def _device(leaves: list[Any]) -> jax.Device | None:
    # The one device a program runs on: its committed arguments', else the default; None for several.
    placed = {d for leaf in leaves if isinstance(leaf, jax.Array) and leaf.committed for d in leaf.devices()}
    if len(placed) > 1:
        return None
    default = getattr(jax.config, "jax_default_device", None)
    device = next(iter(placed)) if placed else default if default is not None else jax.devices()[0]
    return device if isinstance(device, jax.Device) else None


def _jax_cache_on() -> bool:
    # Whether JAX's own persistent cache is set, or was taken up by this process (and may still answer a
    # compile: an executable it loads cannot be serialized whole, so the store must not keep it).
    if getattr(jax.config, "jax_compilation_cache_dir", None):
        return True
    try:
        from jax._src import compilation_cache
    except ImportError:
        return False
    return getattr(compilation_cache, "_cache", None) is not None


def _store_folder() -> Path | None:
    # The store's folder now: none while JAX's own persistent cache is on (it keeps every program then).
    folder = cache_folder()
    return None if folder is None or _jax_cache_on() else folder


def _compile(lowered: jax.stages.Lowered, device: jax.Device, store: ProgramStore) -> Callable[..., Any]:
    # The program from the store when a valid entry is there, else compiled and saved.
    from jax.experimental import serialize_executable

    name = fingerprint(lowered, [device])
    payload = store.load(name)
    if payload is not None:
        try:
            return serialize_executable.deserialize_and_load(
                payload, lowered.in_tree, lowered.out_tree, backend=device.client, execution_devices=[device]
            )
        except Exception:  # an entry this JAX cannot load (a signed file can still fail): compile it again
            pass
    compiled = lowered.compile()
    try:
        payload = serialize_executable.serialize(compiled)[0]
    except (ValueError, NotImplementedError, TypeError):  # a program JAX cannot serialize: not kept
        return compiled
    store.save(name, payload)
    return compiled


def kept(jitted: Any, static: tuple[str, ...] = ()) -> Callable[..., Any]:
    """``jitted`` (a ``jax.jit`` function whose static arguments are named ``static``), called the same
    way, with each program it compiles kept in filterviz's store between sessions."""
    parameters = list(inspect.signature(jitted).parameters)
    positions = {parameters.index(name) for name in static}
    programs: OrderedDict[Any, Callable[..., Any]] = OrderedDict()  # the latest MEMORY, in use order

    @functools.wraps(jitted)
    def call(*args: Any, **kwargs: Any) -> Any:
        folder = _store_folder()  # read at each call: the setting may change; the folder is made on a miss
        if folder is None:
            return jitted(*args, **kwargs)
        dynamic = [arg for index, arg in enumerate(args) if index not in positions]
        named = {name: value for name, value in kwargs.items() if name not in static}
        fixed = tuple(arg for index, arg in enumerate(args) if index in positions)
        fixed += tuple(sorted((name, value) for name, value in kwargs.items() if name in static))
        leaves, tree = jax.tree.flatten((dynamic, named))
        signature = (fixed, tree, tuple(_leaf_signature(leaf) for leaf in leaves))
        program = programs.get(signature)
        if program is not None:
            programs.move_to_end(signature)
        else:
            device, store = _device(leaves), ProgramStore(folder, limit_bytes())
            if device is None or not store.usable():
                return jitted(*args, **kwargs)
            program = _compile(jitted.trace(*args, **kwargs).lower(), device, store)
            programs[signature] = program
            while len(programs) > MEMORY:
                programs.popitem(last=False)
        return program(*dynamic, **named)

    return call
