"""A sweep's folder: what it may hold, how its manifest is written and checked, who may write to it.

A sweep folder holds only files at names filterviz chooses::

    sweep.json                  the settings record (``format`` and ``settings``)
    manifest.jsonl              one JSON line per finished filter; ``manifest.p<i>.jsonl`` per process
    <layer>/<NNNN>.png          a filter's picture (``.npy``: its float32 image, on request)
    sheets/<layer>.png          contact sheets          (written by filterviz.atlas)
    index.html                  the atlas page          (``atlas.html`` if the folder had its own index.html)
    .filterviz.lock             held by the process writing the folder

Ownership: a sweep deletes or replaces only files its manifest or settings record names, or files that
carry filterviz's mark (PNGs' ``Software`` text, the page's generator tag). Anything else in the folder
is the user's and is never touched; a sweep that would have to replace such a file refuses to start.

Verification: each manifest line records its picture's size and sha256. :func:`scan_manifest` checks
every line (known layer and filter, the exact path filterviz would use, a regular file inside the folder,
size and checksum), so a cut, emptied, swapped or hand-edited picture counts as not done, and a line
pointing anywhere else is never followed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import stat
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from filterviz.errors import OutputError, SweepError
from filterviz.io.files import TEMPORARY_SUFFIX, written_by_filterviz

SETTINGS_FILE = "sweep.json"
LOCK_FILE = ".filterviz.lock"
SHEETS_FOLDER = "sheets"
PAGE = "index.html"
OTHER_PAGE = "atlas.html"
"""Where the atlas page goes when the folder holds an ``index.html`` filterviz did not write."""
PAGE_MARK = '<meta name="generator" content="filterviz">'
DATA_FOLDER = "atlas"
"""Where the atlas page's per-layer data files go: ``atlas/<layer>.js``."""
DATA_MARK = "/* filterviz atlas data */"
"""The first bytes of every atlas data file filterviz writes."""
_MANIFEST_NAME = re.compile(r"manifest(\.p\d+)?\.jsonl")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
"""A layer name that can name a folder inside the sweep's (no separator, no leading dot)."""
_PICTURE_NAME = re.compile(r"(\d{4,})\.(png|npy)")


def picture_path(layer: str, filter_index: int, suffix: str = ".png") -> str:
    """Path of a filter's picture relative to the sweep folder: ``"block4_conv1/0007.png"``."""
    return f"{layer}/{filter_index:04d}{suffix}"


def manifest_files(folder: Path) -> list[Path]:
    """The folder's manifest files (``manifest.jsonl``, ``manifest.p<i>.jsonl``), and no other file."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    return [folder / name for name in names if _MANIFEST_NAME.fullmatch(name)]


def finite_or_text(value: float) -> float | str:
    """A number for JSON: itself if finite, else ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (strict
    JSON has no non-finite numbers); ``float()`` reads each back."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------------
# Reading and checking the manifest.


class ManifestScan(NamedTuple):
    """What :func:`scan_manifest` found: the good entries (one per filter, in layer and filter order),
    the problems of every other line (``"manifest.jsonl line 3: ..."``), and every path any
    well-formed line names (which a sweep may replace, even where the file is damaged)."""

    entries: list[dict[str, Any]]
    problems: list[str]
    named: set[str]


def regular_inside(folder: Path, relative: str) -> os.stat_result | str:
    """The stat of ``folder/relative`` if it is a regular file reached through no link; else a problem."""
    path = folder
    for part in Path(relative).parts:
        path = path / part
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return f"{relative} is missing"
        except OSError as error:
            return f"{relative} cannot be read ({error.strerror or error})"
        if stat.S_ISLNK(info.st_mode):
            return f"{relative} goes through a symbolic link"
    if not stat.S_ISREG(info.st_mode):
        return f"{relative} is not a regular file"
    return info


def _check_file(folder: Path, relative: str, size: Any, checksum: Any) -> str | None:
    info = regular_inside(folder, relative)
    if isinstance(info, str):
        return info
    if size is None or checksum is None:
        # A line from before sizes and checksums were recorded: the picture must at least decode.
        if relative.endswith(".png") and not _decodes(folder / relative):
            return f"{relative} does not decode as a PNG"
        return None
    if info.st_size != size:
        return f"{relative} has {info.st_size:,} bytes, the manifest recorded {size:,}"
    if digest((folder / relative).read_bytes()) != checksum:
        return f"{relative} does not match its recorded checksum"
    return None


def _decodes(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as picture:
            picture.load()
        return True
    except (OSError, SyntaxError, ValueError):
        return False


def layer_table(folder: Path) -> dict[str, int]:
    """``{layer: channels}`` of the network the folder's sweep drew, in network order: from its settings
    record, or VGG16's for a folder written before sweeps recorded it."""
    path = folder / SETTINGS_FILE
    try:
        record = json.loads(path.read_text()) if path.is_file() and not path.is_symlink() else {}
        layers = record.get("layers") if isinstance(record, dict) else None
        if isinstance(layers, dict) and all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in layers.items()
        ):
            return layers
    except (ValueError, OSError):
        pass
    from filterviz.networks import VGG16  # folders from before sweep.json listed layers were VGG16's

    return {layer.name: layer.channels for layer in VGG16.layers}


def parse_filter_line(line: str, layers: Mapping[str, int]) -> dict[str, Any] | str:
    """A JSON line of one filter (a manifest's, or ``examples.jsonl``'s) as a dict whose ``layer`` is a
    known layer with a folder-safe name and whose ``filter`` is in its range; or what is wrong with it."""
    try:
        entry = json.loads(line)
    except ValueError:
        return "not JSON (cut short by a kill?)"
    if not isinstance(entry, dict):
        return "not a JSON object"
    layer, index = entry.get("layer"), entry.get("filter")
    if not isinstance(layer, str) or layer not in layers or not _SAFE_NAME.fullmatch(layer):
        return f"unknown layer {str(layer)[:80]!r}"
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < layers[layer]:
        return f"filter {str(index)[:80]!r} is not a filter of {layer}"
    return entry


def _parse(line: str, layers: Mapping[str, int]) -> dict[str, Any] | str:
    """A manifest line as an entry with a known layer, an in-range filter and filterviz's own paths."""
    entry = parse_filter_line(line, layers)
    if isinstance(entry, str):
        return entry
    layer, index = entry["layer"], entry["filter"]
    if entry.get("png") != picture_path(layer, index):
        return f"png {entry.get('png')!r} is not {picture_path(layer, index)!r}"
    if "raw" in entry and entry["raw"] != picture_path(layer, index, ".npy"):
        return f"raw {entry.get('raw')!r} is not {picture_path(layer, index, '.npy')!r}"
    try:
        entry["activation"] = float(entry.get("activation"))
    except (TypeError, ValueError):
        return f"activation {entry.get('activation')!r} is not a number"
    return entry


def scan_manifest(folder: str | os.PathLike[str], *, verify: bool = True) -> ManifestScan:
    """Every line of every manifest file of ``folder``, checked (see the module docstring).

    ``verify`` also checks each picture's file (size and checksum); without it only the lines are read.
    A filter with several good lines keeps the last.
    """
    folder = Path(folder)
    layers = layer_table(folder)
    order = {name: position for position, name in enumerate(layers)}
    entries: dict[tuple[str, int], dict[str, Any]] = {}
    problems: list[str] = []
    named: set[str] = set()
    for path in manifest_files(folder):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            problems.append(f"{path.name}: cannot be read ({error.strerror or error})")
            continue
        lines = text.split("\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip() or (number == len(lines) and not text.endswith("\n")):
                continue  # the blank end, or a last line a kill cut short (the writer cuts it off)
            entry = _parse(line, layers)
            if isinstance(entry, str):
                problems.append(f"{path.name} line {number}: {entry}")
                continue
            named.add(entry["png"])
            if "raw" in entry:
                named.add(entry["raw"])
            if verify:
                trouble = _check_file(folder, entry["png"], entry.get("bytes"), entry.get("sha256"))
                if trouble is None and "raw" in entry:
                    trouble = _check_file(
                        folder, entry["raw"], entry.get("raw_bytes"), entry.get("raw_sha256")
                    )
                if trouble is not None:
                    problems.append(f"{path.name} line {number}: {trouble}")
                    entries.pop((entry["layer"], entry["filter"]), None)
                    continue
            entries[entry["layer"], entry["filter"]] = entry
    ordered = [entries[key] for key in sorted(entries, key=lambda k: (order[k[0]], k[1]))]
    return ManifestScan(ordered, problems, named)


def read_manifest(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The finished filters of a sweep folder: one entry per filter whose picture is whole.

    Lines cut short by a kill, hand-edited lines and entries whose picture is missing, cut, replaced
    or outside the folder are left out (:func:`scan_manifest` says why): those filters are not done.
    """
    return scan_manifest(folder).entries


class ManifestWriter:
    """Appends entries to one manifest file, thread-safely, one ``os.write`` per line."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        _cut_partial_last_line(path)
        try:
            self._descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as error:
            raise OutputError(path, f"cannot write ({error.strerror or error})") from None

    def append(self, entry: Mapping[str, Any]) -> None:
        line = (json.dumps(entry, separators=(",", ":"), allow_nan=False) + "\n").encode()
        with self._lock:
            try:
                written = os.write(self._descriptor, line)
            except OSError as error:
                raise OutputError(self.path, f"cannot write ({error.strerror or error})") from None
            if written != len(line):  # a full disk can cut a write short: take the fragment back
                os.ftruncate(self._descriptor, os.lseek(self._descriptor, 0, os.SEEK_END) - written)
                raise OutputError(self.path, "cannot write (disk full?)")

    def close(self) -> None:
        os.close(self._descriptor)


def _cut_partial_last_line(path: Path) -> None:
    # A process killed mid-line leaves a last line with no newline: cut it so the file stays JSON lines.
    if not path.is_file() or path.is_symlink():
        return
    with open(path, "rb+") as file:
        data = file.read()
        if data and not data.endswith(b"\n"):
            file.truncate(data.rfind(b"\n") + 1)


# ----------------------------------------------------------------------------------------------------
# One writer at a time.


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


# ----------------------------------------------------------------------------------------------------
# What the folder holds, and clearing a sweep from it.


def read_settings_record(folder: Path) -> dict[str, Any] | None:
    """The ``settings`` of the folder's ``sweep.json``; None if there is none. :class:`SweepError` if the
    file is there but is not filterviz's."""
    path = folder / SETTINGS_FILE
    info = regular_inside(folder, SETTINGS_FILE)
    if isinstance(info, str):
        if not os.path.lexists(path):
            return None
        raise SweepError(f"{path} is not a filterviz sweep settings file ({info}); use another folder")
    try:
        record = json.loads(path.read_text())
        settings = record["settings"]
        if not isinstance(settings, dict) or "format" not in record:
            raise TypeError
    except (ValueError, KeyError, TypeError, OSError):
        raise SweepError(f"{path} is not a filterviz sweep settings file; use another folder") from None
    return settings


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


def clear_sweep(folder: Path) -> list[str]:
    """Delete the sweep in ``folder``: every file its manifests name, the manifests, the settings record,
    and the contact sheets, page and page data that carry filterviz's mark; then the folders this leaves
    empty. Nothing else. Returns the paths deleted (relative). :class:`SweepError` if the folder holds no
    sweep."""
    if read_settings_record(folder) is None and not manifest_files(folder):
        raise SweepError(
            f"{folder} holds no filterviz sweep (no {SETTINGS_FILE}, no manifest); overwrite clears only "
            "filterviz's own sweeps: use another folder"
        )
    layers = layer_table(folder)
    scan = scan_manifest(folder, verify=False)
    doomed = sorted(scan.named)
    doomed += [path.name for path in manifest_files(folder)] + [SETTINGS_FILE]
    doomed += [page for page in (PAGE, OTHER_PAGE) if page_written_by_filterviz(folder / page)]
    # Each layer's contact sheet and page data, where filterviz's mark says it wrote them.
    for subfolder, suffix, ours in (
        (SHEETS_FOLDER, ".png", written_by_filterviz),
        (DATA_FOLDER, ".js", data_written_by_filterviz),
    ):
        inside = folder / subfolder
        if inside.is_dir() and not inside.is_symlink():
            doomed += [
                f"{subfolder}/{name}"
                for name in sorted(os.listdir(inside))
                if name.endswith(suffix) and name[: -len(suffix)] in layers and ours(inside / name)
            ]
    removed = []
    for relative in doomed:
        path = folder / relative
        if isinstance(regular_inside(folder, relative), str) and not path.is_symlink():
            continue
        if path.parent.is_symlink():
            continue  # never follow a link out of the folder
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(relative)
    for name in (*layers, SHEETS_FOLDER, DATA_FOLDER):
        with contextlib.suppress(OSError):
            if not (folder / name).is_symlink():
                (folder / name).rmdir()  # only if empty: the user's files keep their folder
    return removed


def foreign_files(folder: Path, paths: Iterable[str], named: set[str]) -> list[str]:
    """Of ``paths`` (relative), those a sweep must not replace: anything but a regular file that its
    manifest names (``named``) or that carries filterviz's mark. A ``.npy`` is filterviz's when its PNG is."""
    foreign = []
    for relative in paths:
        path = folder / relative
        if not os.path.lexists(path):
            continue
        if relative in named:
            continue  # the sweep's own (a link there is damage: the sweep removes the link, not its target)
        sibling = path.with_suffix(".png")
        if path.suffix == ".npy" and stat.S_ISREG(os.lstat(path).st_mode) and written_by_filterviz(sibling):
            continue
        if path.suffix == ".png" and written_by_filterviz(path):
            continue
        foreign.append(relative)
    return foreign


def layer_folder_problem(folder: Path, layer: str) -> str | None:
    """Why ``folder/layer`` cannot hold pictures (a file, or a link out of the folder), or None."""
    path = folder / layer
    if path.is_symlink():
        return f"{path} is a symbolic link; a sweep writes only inside its folder"
    if path.exists() and not path.is_dir():
        return f"{path} is not a folder"
    return None


def stale_temporaries(folder: Path, layers: Iterable[str]) -> Iterator[Path]:
    """Temporary files a killed run left: filterviz's own hidden ``.NNNN.png.*.part`` names only."""
    for layer in layers:
        try:
            names = os.listdir(folder / layer)
        except OSError:
            continue
        for name in names:
            stem = name[1:].split(".", 2)
            if (
                name.startswith(".")
                and name.endswith(TEMPORARY_SUFFIX)
                and len(stem) == 3
                and _PICTURE_NAME.fullmatch(f"{stem[0]}.{stem[1]}")
            ):
                yield folder / layer / name
