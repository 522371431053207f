"""Views of a sweep folder: ranked filters, per-layer contact sheets and a static atlas page.

All of them read the folder's manifest (:func:`filterviz.sweeps.manifest.scan_manifest`) and nothing else,
so they can be rebuilt at any time, e.g. after copying the folders of several hosts together. The atlas
page is ``index.html`` with the layer list inline, each layer's filters in ``atlas/<layer>.js`` (loaded
as a script when the layer is shown, so a page of thousands of filters stays small) and its pictures
the sweep's own PNGs by relative path, loaded lazily: it opens from disk with no server and no network.

The page trusts nothing it reads: only manifest lines that pass the folder's checks (known layer and
filter, filterviz's own relative path, a whole picture) reach it; its data are JSON with every ``<``,
``>`` and ``&`` escaped, and the page's script shows them as text and links only to paths
of the form ``<layer>/<NNNN>.png``. A folder that holds its own ``index.html`` keeps it: the page is
then written as ``atlas.html``.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from filterviz.core.hits import HISTOGRAM_EDGES
from filterviz.deprecation import renamed
from filterviz.errors import SettingError, SweepError, UnknownLayerError
from filterviz.io.files import atomic_write, encode_png, written_by_filterviz
from filterviz.jobs.folder import (
    DATA_MARK,
    PAGE_MARK,
    FolderLock,
    data_written_by_filterviz,
    page_written_by_filterviz,
)
from filterviz.sweeps.folder import layer_folder_problem, read_settings_record
from filterviz.sweeps.layout import (
    DATA_FOLDER,
    OTHER_PAGE,
    PAGE,
    SETTINGS_FILE,
    SHEETS_FOLDER,
)
from filterviz.sweeps.manifest import (
    finite_or_text,
    layer_table,
    parse_filter_line,
    regular_inside,
    scan_manifest,
)

EXAMPLES_FILE = "examples.jsonl"
EXAMPLES_FOLDER = "examples"
_MAX_HITS = 64
DEAD_ACTIVATION = 0.0
"""A filter whose achieved mean activation is at most this never fired: it is flagged as dead."""


class Atlas(NamedTuple):
    """What :func:`write_atlas` wrote: the page, and every problem it found and left out."""

    page: Path
    problems: tuple[str, ...]


def _entries(folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    if read_settings_record(folder) is None:
        raise SweepError(
            f"{folder} holds no filterviz sweep (no {SETTINGS_FILE}); run 'filterviz sweep' first"
        )
    scan = scan_manifest(folder)
    return scan.entries, scan.problems


@renamed(folder="out")
def top_filters(
    out: str | os.PathLike[str], layer: str | None = None, count: int | None = None
) -> list[dict[str, Any]]:
    """The finished filters of the sweep folder ``out`` (its manifest entries, each a filter whose picture
    is whole), strongest achieved activation first: of ``layer``, or of every layer in the network's
    order; ``count`` of them per layer.

    Raises :class:`SweepError` if ``out`` holds no sweep, :class:`UnknownLayerError` for a bad name.
    """
    folder = Path(out)
    table = layer_table(folder)
    if layer is not None and layer not in table:
        raise UnknownLayerError(layer, list(table))
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise SettingError(f"count must be a whole number of at least 1, got {count!r}")
    entries = _entries(folder)[0]
    chosen = []
    for name in [layer] if layer is not None else table:
        found = [entry for entry in entries if entry["layer"] == name]
        found.sort(key=_strongest_first)
        chosen += found if count is None else found[:count]
    return chosen


def _strongest_first(entry: dict[str, Any]) -> tuple[float, int]:
    activation = entry["activation"]
    return (-activation if math.isfinite(activation) else math.inf, entry["filter"])


def load_pictures(folder: str | os.PathLike[str], entries: Sequence[dict[str, Any]]) -> np.ndarray:
    """The PNGs of ``entries`` as ``uint8[N, H, W, 3]``."""
    from PIL import Image

    pictures = []
    for entry in entries:
        with Image.open(Path(folder) / entry["png"]) as picture:
            pictures.append(np.asarray(picture.convert("RGB")))
    return np.stack(pictures) if pictures else np.zeros((0, 1, 1, 3), np.uint8)


def contact_sheet(
    pictures: np.ndarray,
    labels: Sequence[str] | None = None,
    *,
    columns: int | None = None,
    tile: int = 64,
    gap: int = 2,
) -> np.ndarray:
    """``uint8[N, H, W, 3]`` tiled into one ``uint8`` picture, each scaled to ``tile`` pixels high.

    ``labels`` (one per picture, e.g. the filter numbers) are written under the tiles. ``columns``
    defaults to a near-square layout; tiles are separated by ``gap`` white pixels.
    """
    from PIL import Image, ImageDraw, ImageFont

    count = len(pictures)
    if count == 0:
        return np.full((tile, tile, 3), 255, np.uint8)
    if labels is not None and len(labels) != count:
        raise SettingError(f"{len(labels)} labels for {count} pictures")
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    height, width = pictures.shape[1:3]
    tile_height, tile_width = int(tile), max(1, round(tile * width / height))
    font = ImageFont.load_default()
    caption = 0 if labels is None else int(font.getbbox("0123456789")[3]) + 3
    cell_height = tile_height + caption
    sheet = Image.new("RGB", (columns * (tile_width + gap) + gap, rows * (cell_height + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    for index, picture in enumerate(pictures):
        row, column = divmod(index, columns)
        small = Image.fromarray(picture).resize((tile_width, tile_height), Image.Resampling.LANCZOS)
        top, left = gap + row * (cell_height + gap), gap + column * (tile_width + gap)
        sheet.paste(small, (left, top))
        if labels is not None:
            draw.text((left + 1, top + tile_height + 1), str(labels[index]), fill="black", font=font)
    return np.asarray(sheet)


def dataset_examples(folder: Path, table: dict[str, int]) -> tuple[dict[tuple[str, int], dict], list[str]]:
    """The dataset examples ``filterviz examples`` wrote into ``folder`` (``examples.jsonl``), checked:
    ``{(layer, filter): {"hits": [{"crop", "image", "activation"}], "mean", "fired"}}`` and the problems.

    Only lines of a known layer and filter whose crops are filterviz's own relative paths to regular
    files get through; image names are kept as text for the page to show as text.
    """
    path = folder / EXAMPLES_FILE
    if not os.path.lexists(path):
        return {}, []
    if not os.path.isfile(path) or os.path.islink(path):
        return {}, [f"{EXAMPLES_FILE} is not a regular file: no dataset examples"]
    found: dict[tuple[str, int], dict] = {}
    problems: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            entry = _example_entry(folder, line, table)
            if isinstance(entry, str):
                problems.append(f"{EXAMPLES_FILE} line {number}: {entry}")
            else:
                found[entry[0]] = entry[1]
    return found, problems


def _example_entry(folder: Path, line: str, table: dict[str, int]):
    record = parse_filter_line(line, table)
    if isinstance(record, str):
        return record
    layer, index = record["layer"], record["filter"]
    hits = record.get("hits")
    if not isinstance(hits, list):
        return "no hits"
    shown: list[dict[str, Any]] = []
    for hit in hits[:_MAX_HITS]:
        crop = hit.get("crop") if isinstance(hit, dict) else None
        expected = f"{EXAMPLES_FOLDER}/{layer}/{index:04d}_{len(shown)}.png"
        if crop != expected or isinstance(regular_inside(folder, crop), str):
            return f"crop {str(crop)[:80]!r} is not filterviz's {expected}"
        shown.append(
            {"crop": crop, "image": str(hit.get("image", ""))[:200], "activation": _number(hit, "activation")}
        )
    statistics: dict[str, Any] = {key: _number(record, key) for key in ("mean", "fired") if key in record}
    histogram = record.get("histogram")
    if (
        isinstance(histogram, list)
        and len(histogram) == len(HISTOGRAM_EDGES) - 1
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in histogram)
    ):
        statistics["histogram"] = histogram
    return (layer, index), {"hits": shown, **statistics}


def _number(record: dict, key: str) -> float | str:
    # A number for the page (rounded), or "NaN" where the record holds none.
    value = record.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return finite_or_text(round(float(value), 4))
    return "NaN"


def inline_json(data: Any) -> str:
    """``data`` as JSON safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` that HTML could read."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _write_layer_data(folder: Path, summary: list[dict[str, Any]]) -> list[str]:
    """Move each layer's filters out of the page into ``atlas/<layer>.js``, which the page loads when the
    layer is shown, so a page of thousands of filters stays small. A layer whose file would replace one
    filterviz did not write keeps its filters inline. Returns the problems."""
    trouble = layer_folder_problem(folder, DATA_FOLDER)
    if trouble:
        return [f"layer data kept in the page: {trouble}"]
    problems = []
    (folder / DATA_FOLDER).mkdir(exist_ok=True)
    for layer in summary:
        relative = f"{DATA_FOLDER}/{layer['name']}.js"
        target = folder / relative
        if os.path.lexists(target) and not data_written_by_filterviz(target):
            problems.append(f"{relative} was not written by filterviz: kept, and its layer's data are inline")
            continue
        content = {"name": layer["name"], "filters": layer.pop("filters")}
        atomic_write(target, f"{DATA_MARK}\natlasLayer({inline_json(content)});\n".encode())
        layer["data"] = relative
    return problems


@renamed(folder="out")
def write_atlas(out: str | os.PathLike[str], *, tile: int = 64) -> Atlas:
    """Write ``sheets/<layer>.png`` for each swept layer of the sweep folder ``out`` and the atlas page;
    returns an :class:`Atlas`.

    Manifest lines or pictures that fail the folder's checks are left out and listed in
    ``Atlas.problems``; so are contact sheets the folder already holds under filterviz's names but that
    filterviz did not write (they are kept). The page is ``index.html``, or ``atlas.html`` where the
    folder has an ``index.html`` of its own.

    Raises :class:`SweepError` if ``out`` holds no sweep or another process is writing it,
    :class:`OutputError` if it is not writable.
    """
    folder = Path(out)
    with FolderLock(folder, "atlas"):
        entries, problems = _entries(folder)
        table = layer_table(folder)
        layers: dict[str, list[dict[str, Any]]] = {}
        for entry in entries:
            layers.setdefault(entry["layer"], []).append(entry)
        sheets, trouble = _write_sheets(folder, layers, tile)
        problems += trouble
        summary = [
            _layer_summary(layer, table[layer], sheets.get(layer), found) for layer, found in layers.items()
        ]
        examples, trouble = dataset_examples(folder, table)
        problems += trouble
        for layer in summary:
            for entry in layer["filters"]:
                found = examples.get((layer["name"], entry["filter"]))
                if found is not None:
                    entry["examples"] = found
        order = {name: position for position, name in enumerate(table)}
        summary.sort(key=lambda layer: order[layer["name"]])
        problems += _write_layer_data(folder, summary)
        name, trouble = _page_name(folder)
        page = _page(folder, summary, read_settings_record(folder) or {})
        return Atlas(atomic_write(folder / name, page.encode()), (*problems, *trouble))


def _write_sheets(
    folder: Path, layers: dict[str, list[dict[str, Any]]], tile: int
) -> tuple[dict[str, str], list[str]]:
    """Each layer's contact sheet, where filterviz may write it: ``({layer: path}, problems)``."""
    trouble = layer_folder_problem(folder, SHEETS_FOLDER)
    if trouble:
        return {}, [f"no contact sheets: {trouble}"]
    (folder / SHEETS_FOLDER).mkdir(exist_ok=True)
    written, problems = {}, []
    for layer, entries in layers.items():
        sheet_path = f"{SHEETS_FOLDER}/{layer}.png"
        target = folder / sheet_path
        if os.path.lexists(target) and not written_by_filterviz(target):
            problems.append(f"{sheet_path} was not written by filterviz: kept, and no contact sheet")
            continue
        labels = [str(entry["filter"]) for entry in entries]
        atomic_write(target, encode_png(contact_sheet(load_pictures(folder, entries), labels, tile=tile)))
        written[layer] = sheet_path
    return written, problems


def _layer_summary(layer: str, channels: int, sheet: str | None, entries: list[dict[str, Any]]) -> dict:
    """What the page shows of one layer: its sheet and each filter's activation and picture."""
    filters = [
        {"filter": e["filter"], "activation": finite_or_text(round(e["activation"], 4)), "png": e["png"]}
        for e in entries
    ]
    return {"name": layer, "channels": channels, "sheet": sheet, "count": len(entries), "filters": filters}


def _page_name(folder: Path) -> tuple[str, list[str]]:
    """``index.html``, or ``atlas.html`` where the folder holds an ``index.html`` of the user's."""
    index = folder / PAGE
    if not os.path.lexists(index) or page_written_by_filterviz(index):
        return PAGE, []
    if os.path.lexists(folder / OTHER_PAGE) and not page_written_by_filterviz(folder / OTHER_PAGE):
        raise SweepError(
            f"{folder} holds its own {PAGE} and {OTHER_PAGE}; filterviz replaces neither: move one"
        )
    return OTHER_PAGE, [f"{PAGE} was not written by filterviz: kept, and the atlas is {OTHER_PAGE}"]


def _page(folder: Path, summary: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """The page (``atlas.html`` beside this module) with its mark, title and data filled in."""
    page = (resources.files("filterviz.sweeps") / "atlas.html").read_text(encoding="utf-8")
    page = page.replace("__MARK__", PAGE_MARK)
    page = page.replace("__TITLE__", html.escape(f"filterviz atlas: {folder.resolve().name}"))
    shown = {key: settings.get(key) for key in _SHOWN_SETTINGS}
    edges = [finite_or_text(float(edge)) for edge in HISTOGRAM_EDGES]
    data = {"settings": shown, "layers": summary, "dead": DEAD_ACTIVATION, "histogram": edges}
    return page.replace("__DATA__", inline_json(data))


_SHOWN_SETTINGS = ("network", "height", "width", "steps", "step_size", "precision", "start", "seed", "method")
