"""What every job folder shares (a sweep's, a dataset-examples pass's, an activation atlas's): one writer
at a time, the marks that say which files filterviz wrote, and a long pass's saved progress.

Ownership: a job deletes or replaces only files it recorded, or files that carry filterviz's mark (PNGs'
``Software`` text, a page's generator tag, a data file's first line). Anything else in the folder is the
user's and is never touched. One process writes a folder at a time (:class:`FolderLock`).
"""

from __future__ import annotations

import errno
import io
import json
import os
import stat
from pathlib import Path
from typing import Any

import jax
import numpy as np

from filterviz.errors import OutputError, SweepError
from filterviz.io.files import atomic_write, read_json_object, written_by_filterviz

LOCK_FILE = ".filterviz.lock"
"""The lock file a job holds while it writes its folder."""

PAGE_MARK = '<meta name="generator" content="filterviz">'
"""The tag every page filterviz writes carries."""

DATA_MARK = "/* filterviz atlas data */"
"""The first bytes of every atlas data file filterviz writes."""


class FolderLock:
    """An exclusive OS lock (``flock``) on the folder's lock file, held while a process writes the folder.

    A second sweep (or atlas) into the same folder is refused with :class:`SweepError` rather than
    computing everything again beside the first. The lock is the kernel's: it goes with the process, so
    a killed sweep leaves nothing to clean up. Where ``fcntl`` is missing (Windows), no lock is taken.
    """

    def __init__(self, folder: Path, doing: str = "sweep", *, active: bool = True):
        self.path = folder / LOCK_FILE
        self.doing = doing
        self.active = active  # the other processes of one jax.distributed run share process 0's lock
        self._descriptor: int | None = None

    def __enter__(self) -> FolderLock:
        if not self.active or self._descriptor is not None:
            return self  # inactive, or already held (entering again is a no-op)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock on this system
            return self
        try:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as error:
            raise OutputError(self.path, f"cannot create the lock file ({error.strerror or error})") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read_holder(descriptor)
            os.close(descriptor)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SweepError(
                    f"{self.path.parent} is being written by another filterviz process{holder}; wait for "
                    f"it to finish, or use another folder"
                ) from None
            raise OutputError(self.path, f"cannot lock ({error.strerror or error})") from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()} {self.doing}\n".encode())
        self._descriptor = descriptor
        return self

    def __exit__(self, *exception: Any) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing releases the lock
            self._descriptor = None


def _read_holder(descriptor: int) -> str:
    try:
        text = os.pread(descriptor, 100, 0).decode(errors="replace").split()
    except OSError:
        return ""
    return f" (pid {text[0]}, {text[1]})" if len(text) >= 2 and text[0].isdigit() else ""


def _head(path: Path, size: int) -> bytes:
    # The first `size` bytes of a regular file (a link is not followed); empty for anything else.
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return b""
        with open(path, "rb") as file:
            return file.read(size)
    except OSError:
        return b""


def page_written_by_filterviz(path: Path) -> bool:
    """Whether ``path`` is a regular file holding an atlas page filterviz wrote."""
    return PAGE_MARK.encode() in _head(path, 4096)


def data_written_by_filterviz(path: Path) -> bool:
    """Whether ``path`` is a regular file holding one layer's atlas data that filterviz wrote."""
    return _head(path, len(DATA_MARK)) == DATA_MARK.encode()


LARGEST_RECORD_BYTES = 64 << 20
"""A settings record or progress file larger than this is not one filterviz wrote."""


def read_record(path: Path) -> dict[str, Any] | None:
    """The JSON object a job recorded at ``path``, or None where there is nothing there.

    :class:`OutputError` for anything else under that name: a link, a folder, a file too large, or not
    a JSON object (a foreign or damaged file is never read as settings, nor written over)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise OutputError(path, f"cannot be read ({error.strerror or error})") from None
    if not stat.S_ISREG(info.st_mode) or info.st_size > LARGEST_RECORD_BYTES:
        raise OutputError(path, "is not a record filterviz wrote; use another --out")
    try:
        return read_json_object(path.read_bytes())
    except (OSError, ValueError) as error:
        raise OutputError(path, f"is not a record filterviz wrote ({error}); use another --out") from None


def settings_differences(recorded: object, asked: dict[str, Any]) -> list[str]:
    """``["steps: 20 in the folder, 10 asked", ...]`` for each setting that differs; every setting when
    ``recorded`` is not a settings mapping at all."""
    if not isinstance(recorded, dict):
        return ["the folder records no settings"]
    return [
        f"{key}: {_shown(recorded.get(key))} in the folder, {_shown(asked.get(key))} asked"
        for key in sorted(set(recorded) | set(asked), key=str)
        if recorded.get(key) != asked.get(key)
    ]


def _shown(value: object) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def save_progress(path: Path, settings: dict, state: Any, done: int, skipped: list) -> None:
    """Save a pass's running ``state`` (a pytree of arrays), ``settings`` and how far it got, atomically."""
    leaves = jax.tree.leaves(state)
    buffer = io.BytesIO()
    record = json.dumps({"settings": settings, "done": done, "skipped": skipped})
    np.savez(buffer, record=np.asarray(record), **{f"leaf{i}": leaf for i, leaf in enumerate(leaves)})
    atomic_write(path, buffer.getvalue())


def load_progress(path: Path, settings: dict, empty: Any) -> tuple[Any, int, list[tuple]]:
    """``(state, done, skipped)`` a killed pass saved, shaped like ``empty``; :class:`OutputError` if the
    file is not filterviz's progress or holds other settings. Never unpickles."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            record = read_json_object(str(saved["record"]))
            leaves = [saved[f"leaf{i}"] for i in range(len(jax.tree.leaves(empty)))]
    except (OSError, ValueError, KeyError) as error:
        raise OutputError(
            path, f"is not progress filterviz can read ({error}); remove it to start over"
        ) from None
    if record.get("settings") != settings:
        differing = "; ".join(settings_differences(record.get("settings"), settings)[:6])
        raise OutputError(
            path,
            f"holds the progress of other settings, weights or images ({differing}); use another --out, "
            "or remove it to start over",
        )
    state = jax.tree.unflatten(jax.tree.structure(empty), leaves)
    return state, int(record["done"]), [tuple(item) for item in record["skipped"]]


def write_ours(target: Path, data: bytes) -> None:
    """Write a picture where nothing is, or over a picture filterviz wrote: never over someone else's
    file (:class:`OutputError`, the file kept)."""
    if target.exists() and target.suffix == ".png" and not written_by_filterviz(target):
        raise OutputError(target, "is a file filterviz did not write; it is kept: use another --out")
    atomic_write(target, data, durable=False)
