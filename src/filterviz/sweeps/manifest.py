"""A sweep's manifest: one JSON line per finished filter, written whole and checked line by line.

Each line records its picture's size and sha256. :func:`scan_manifest` checks every line (known layer
and filter, the exact path filterviz would use, a regular file inside the folder, size and checksum), so
a cut, emptied, swapped or hand-edited picture counts as not done, and a line pointing anywhere else is
never followed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from filterviz.core.checks import LARGEST_COUNT
from filterviz.deprecation import renamed
from filterviz.errors import OutputError
from filterviz.io.files import read_json
from filterviz.sweeps.layout import SETTINGS_FILE, folder_safe, manifest_files, picture_path


def finite_or_text(value: float) -> float | str:
    """A number for JSON: itself if finite, else ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (strict
    JSON has no non-finite numbers); ``float()`` reads each back."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
        record = read_json(path.read_text()) if path.is_file() and not path.is_symlink() else {}
        layers = record.get("layers") if isinstance(record, dict) else None
        if isinstance(layers, dict) and all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and 0 < v <= LARGEST_COUNT
            for k, v in layers.items()
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
        entry = read_json(line)
    except ValueError:
        return "not JSON (cut short by a kill?)"
    if not isinstance(entry, dict):
        return "not a JSON object"
    layer, index = entry.get("layer"), entry.get("filter")
    if not isinstance(layer, str) or layer not in layers or not folder_safe(layer):
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
        entry["activation"] = float(entry["activation"])
    except (KeyError, TypeError, ValueError):
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


@renamed(folder="out")
def read_manifest(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The finished filters of the sweep folder ``out``: one entry per filter whose picture is whole.

    Lines cut short by a kill, hand-edited lines and entries whose picture is missing, cut, replaced
    or outside the folder are left out (:func:`scan_manifest` says why): those filters are not done.
    """
    return scan_manifest(out).entries


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
