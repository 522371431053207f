"""A sweep's folder: who may write to it, what filterviz may replace or delete in it, and its settings.

The names it may hold are in :mod:`filterviz.sweeps.layout`, its manifest in
:mod:`filterviz.sweeps.manifest`.

Ownership: a sweep deletes or replaces only files its manifest or settings record names, or files that
carry filterviz's mark (PNGs' ``Software`` text, the page's generator tag, the data files' first line).
Anything else in the folder is the user's and is never touched; a sweep that would have to replace such
a file refuses to start. One process writes a folder at a time (:class:`FolderLock`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from filterviz.core.network import Network
from filterviz.errors import FilterVizError, OutputError, SweepError
from filterviz.io.files import (
    TEMPORARY_SUFFIX,
    atomic_write,
    check_no_links,
    read_json_object,
    written_by_filterviz,
)
from filterviz.jobs.folder import LOCK_FILE, FolderLock, data_written_by_filterviz, page_written_by_filterviz
from filterviz.jobs.multihost import barrier, together
from filterviz.sweeps.layout import (
    DATA_FOLDER,
    OTHER_PAGE,
    PAGE,
    PICTURE_NAME,
    SETTINGS_FILE,
    SHEETS_FOLDER,
    manifest_files,
    picture_path,
)
from filterviz.sweeps.manifest import layer_table, regular_inside, scan_manifest
from filterviz.sweeps.plan import SweepSettings

SETTINGS_FORMAT = 2
"""The settings record's format; 2: manifest lines record each file's size and sha256."""

# ----------------------------------------------------------------------------------------------------
# Reading and checking the manifest.


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
        record = read_json_object(path.read_text())
        settings = record["settings"]
        if not isinstance(settings, dict) or "format" not in record or not _all_finite(settings):
            raise TypeError
    except (ValueError, KeyError, TypeError, OSError):
        raise SweepError(f"{path} is not a filterviz sweep settings file; use another folder") from None
    return settings


def _all_finite(value: object) -> bool:
    # Settings filterviz wrote hold finite numbers only; 1e999 in a file parses as inf, which no page
    # or comparison can use.
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(item) for item in value.values())
    if isinstance(value, list):
        return all(_all_finite(item) for item in value)
    return True


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
    try:
        path = check_no_links(folder, layer)
    except OutputError as error:
        return str(error)
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
                and PICTURE_NAME.fullmatch(f"{stem[0]}.{stem[1]}")
            ):
                yield folder / layer / name


def _clear_for_overwrite(folder: Path) -> None:
    # overwrite clears a sweep filterviz wrote, and nothing else.
    if read_settings_record(folder) is not None or manifest_files(folder):
        clear_sweep(folder)
    elif set(os.listdir(folder)) - {LOCK_FILE}:
        raise SweepError(
            f"{folder} is not a filterviz sweep (no {SETTINGS_FILE}, no manifest), so there is "
            "nothing to overwrite; overwrite clears only filterviz's own sweeps: use another folder"
        )


def _check_recorded(folder: Path, settings: SweepSettings) -> None:
    # A folder goes on only with the settings its pictures were made with.
    recorded = read_settings_record(folder)
    if recorded is None and manifest_files(folder):
        raise SweepError(
            f"{folder} has a manifest but no {SETTINGS_FILE}, so the settings its pictures were made "
            f"with are unknown; put {SETTINGS_FILE} back, or start again with --overwrite "
            "(overwrite=True)"
        )
    if recorded is None:
        return
    try:
        previous = SweepSettings(**recorded)
    except TypeError:
        raise SweepError(
            f"{folder / SETTINGS_FILE} is not a filterviz sweep settings file; use another folder"
        ) from None
    differences = previous.differences(settings)
    if differences:
        raise SweepError(
            f"{folder} holds a sweep made with other settings ({'; '.join(differences)}); "
            "use another folder, or start it again with --overwrite (overwrite=True)"
        )


def prepare_folder(
    folder: Path, settings: SweepSettings, network: Network, overwrite: bool, lock: FolderLock
) -> None:
    """Create the folder, lock it, check it holds a sweep with these settings (or clear it, with
    ``overwrite``); every process must agree before any starts. Process 0 takes the lock and writes."""
    first = jax.process_index() == 0
    # Every process must stop if any one must, or the others would wait for it forever.
    try:
        with together(folder):
            folder.mkdir(parents=True, exist_ok=True)
            if folder.is_symlink() or not folder.is_dir():
                raise OutputError(folder, "is not a folder")
            if not os.access(folder, os.W_OK):
                raise OutputError(folder, "folder is not writable")
            lock.__enter__()  # process 0 only (the others' lock is inactive)
            if first and overwrite:
                _clear_for_overwrite(folder)
            if not overwrite:
                _check_recorded(folder, settings)
    except FilterVizError:
        lock.__exit__(None, None, None)
        raise
    barrier("filterviz sweep folder ready")
    if first:
        # The layer table travels with the sweep, so the folder is checked and shown without the network.
        layers = {layer.name: layer.channels for layer in network.layers}
        record = {"format": SETTINGS_FORMAT, "settings": dataclasses.asdict(settings), "layers": layers}
        atomic_write(folder / SETTINGS_FILE, (json.dumps(record, indent=2) + "\n").encode())
        for stale in stale_temporaries(folder, network.layer_names):  # what a killed run left half-written
            stale.unlink(missing_ok=True)


def check_targets(folder: Path, pending: list[tuple[str, np.ndarray]], raw: bool, named: set[str]) -> None:
    """Refuse, before any work, to write where the folder holds something filterviz did not write."""
    for layer, _ in pending:
        problem = layer_folder_problem(folder, layer)
        if problem:
            raise SweepError(problem)
    targets = [
        picture_path(layer, int(index), suffix)
        for layer, indices in pending
        for index in indices
        for suffix in ((".png", ".npy") if raw else (".png",))
    ]
    foreign = foreign_files(folder, targets, named)
    if not foreign:
        # A link where the manifest had a picture is damage, to be redone: remove the link (never what
        # it points to), so the new picture is written in the folder.
        for relative in targets:
            if relative in named and (folder / relative).is_symlink():
                (folder / relative).unlink()
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise SweepError(
            f"{folder} holds files filterviz did not write where this sweep would write its pictures "
            f"({shown}); move them away or use another folder"
        )
