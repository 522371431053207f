"""What an activation atlas checks before it works, and what its folder may hold.

Settings are checked against the memory model before anything is written. The record
(``activation-atlas.json``) is written first, so every later file in the folder is the atlas's own; a
file under an atlas's names with no record beside it is the user's and is kept.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from filterviz.activation_atlases.cells import LARGEST_GRID, check_grid
from filterviz.activation_atlases.page import OTHER_PAGE, PAGE
from filterviz.core.ascent_checks import check_method_size
from filterviz.core.checks import device_memory
from filterviz.core.methods import Method
from filterviz.core.network import Network
from filterviz.errors import OutputError, SettingError
from filterviz.io.files import check_no_links, written_by_filterviz
from filterviz.jobs.folder import page_written_by_filterviz, read_record, settings_differences

RECORD = "activation-atlas.json"
VECTORS = "vectors.npz"
LAYOUT = "layout.npy"
PICTURE_FOLDERS = ("icons", "patches")
_NPY_HEADER_ROOM = 4096  # a .npy header is a few hundred bytes at most


def zoom_levels(grid: int, zoom: Sequence[int] | None) -> list[int]:
    """The grids of an atlas's zoom levels, coarsest first: ``zoom``, or half the grid and twice it (up to
    :data:`LARGEST_GRID`), and always the main ``grid`` itself."""
    # The main grid is always drawn: the page opens there, and an atlas whose main grid is too fine for
    # the data is an error, never an empty success.
    if zoom is None:
        chosen = [max(1, grid // 2), min(grid * 2, LARGEST_GRID)]
    elif isinstance(zoom, str) or not isinstance(zoom, Sequence):
        raise SettingError(f"zoom must be a list of grids (cells per side), got {zoom!r}")
    else:
        chosen = [check_grid(g) for g in zoom]
    return sorted({*chosen, grid})


def check_memory(net: Network, layer: str, chosen: Method, icons: tuple[int, int], photos: tuple) -> None:
    """Before any work, by the memory model that sizes every chunk: one icon and a chunk of icons
    (``icons``: side, per call) fit the device, so does a batch of photos (``photos``: side, per batch,
    how many, vectors each), and every vector collected fits a quarter of the memory."""
    size, batch_size = icons
    image_size, image_batch_size, images, positions = photos
    check_method_size(net, chosen, layer, size, size)
    available, channels = device_memory(), net.layer(layer).channels
    per_icon = net.activation_elements(layer, *chosen.fed_size(size, size)) * 4 * chosen.images_per_objective
    for what, each, count, share in (
        ("batch_size", per_icon, batch_size, 1),
        ("image_batch_size", net.activation_elements(layer, image_size, image_size) * 4, image_batch_size, 1),
        ("positions", images * channels * 4, positions, 4),
    ):
        if each * count > available // share:
            room, largest = ("the" if share == 1 else "a quarter of the"), max(1, available // share // each)
            raise SettingError(
                f"{what} {count:,} needs about {each * count / 2**30:,.1f} GiB, more than {room} "
                f"{available / 2**30:,.1f} GiB here; the largest that fits is about {largest:,}"
            )


def make_folder(folder: Path) -> None:
    """The output folder and the folders filterviz writes in it, none of them a link out of it, nor a file
    where a folder goes."""
    for parts in ((), *((name,) for name in PICTURE_FOLDERS)):
        path = check_no_links(folder, *parts)
        if os.path.lexists(path) and not path.is_dir():
            raise OutputError(path, "is not a folder; filterviz writes a folder there: use another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(folder, f"cannot be made a folder ({error.strerror or error})") from None


def saved_layout(path: Path, count: int) -> np.ndarray:
    """An earlier run's layout: a plain float array [count, 2] of finite numbers, or an error naming it."""
    try:
        if not path.is_file() or path.stat().st_size > _NPY_HEADER_ROOM + count * 2 * 8:
            raise ValueError("not a layout of this atlas's size")
        layout = np.load(path, allow_pickle=False)
        if layout.shape != (count, 2) or not np.issubdtype(layout.dtype, np.floating):
            raise ValueError(f"holds {layout.dtype} {list(layout.shape)}, not float [{count}, 2]")
        if not np.isfinite(layout).all():
            raise ValueError("holds values that are not finite")
    except (OSError, ValueError, EOFError) as error:
        raise OutputError(path, f"is damaged ({error}); remove it to lay the atlas out again") from None
    return layout


def check_folder(folder: Path, settings: dict, overwrite: bool = False) -> bool:
    """Whether ``folder`` already holds an atlas record. A folder of another atlas (unless ``overwrite``
    is to clear it), or one whose record filterviz did not write, is never written over:
    :class:`OutputError`."""
    previous = read_record(folder / RECORD)
    if previous is None:  # no atlas here yet: a file under an atlas's names is the user's
        for name in (VECTORS, LAYOUT):
            if os.path.lexists(folder / name):
                raise OutputError(
                    folder / name, "was not written by filterviz (no atlas record beside it); it is kept: "
                    "use another --out",
                )  # fmt: skip
    elif previous.get("settings") != settings and not overwrite:
        differing = "; ".join(settings_differences(previous.get("settings"), settings)[:6])
        raise OutputError(
            folder, f"holds an activation atlas with other settings ({differing}); use another --out, "
            "or start it again with --overwrite (overwrite=True)",
        )  # fmt: skip
    return previous is not None


def clear_atlas(folder: Path) -> list[str]:
    """Delete the activation atlas in ``folder`` and nothing else: its record, vectors and layout (the
    record is written before them, so beside it they are the atlas's own), the icons and patches that
    carry filterviz's mark, its page; then the picture folders this leaves empty. A folder with no
    atlas record is left as it is. Returns the paths deleted (relative)."""
    if read_record(folder / RECORD) is None:
        return []
    doomed = [name for name in (VECTORS, LAYOUT) if (folder / name).is_file()]
    doomed += [page for page in (PAGE, OTHER_PAGE) if page_written_by_filterviz(folder / page)]
    inner: list[str] = []  # the picture folders, deepest first
    for top in PICTURE_FOLDERS:
        if (folder / top).is_symlink():
            continue  # never reach out of the folder
        for parent, folders, names in os.walk(folder / top):  # os.walk does not follow links
            relative = Path(parent).relative_to(folder)
            inner.insert(0, str(relative))
            folders[:] = [name for name in folders if not (Path(parent) / name).is_symlink()]
            doomed += [str(relative / name) for name in names if written_by_filterviz(Path(parent) / name)]
    for name in [*doomed, RECORD]:  # the record last: a kill midway leaves a folder it still covers
        (folder / name).unlink(missing_ok=True)
    for emptied in inner:
        with contextlib.suppress(OSError):
            (folder / emptied).rmdir()  # only if empty: the user's files keep their folder
    return [*doomed, RECORD]
