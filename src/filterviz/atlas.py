"""Views of a sweep folder: ranked filters, per-layer contact sheets and a static atlas page.

All of them read the folder's manifest (:func:`filterviz.sweep.read_manifest`) and nothing else, so
they can be rebuilt at any time, e.g. after copying the folders of several hosts together. The atlas
page is one self-contained ``index.html``: its data are inline and its pictures are the sweep's own
PNGs by relative path, so it opens from disk with no server and no network.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from filterviz.errors import SweepError
from filterviz.images import atomic_write, encode_png
from filterviz.model import LAYER_NAMES, layer_spec
from filterviz.sweep import SETTINGS_FILE, read_manifest

SHEETS_FOLDER = "sheets"
DEAD_ACTIVATION = 0.0
"""A filter whose achieved mean activation is at most this never fired: it is flagged as dead."""


def _entries(folder: Path) -> list[dict[str, Any]]:
    if not (folder / SETTINGS_FILE).is_file():
        raise SweepError(
            f"{folder} holds no filterviz sweep (no {SETTINGS_FILE}); run 'filterviz sweep' first"
        )
    return read_manifest(folder)


def top_filters(folder: str | os.PathLike[str], layer: str, count: int | None = None) -> list[dict[str, Any]]:
    """The manifest entries of ``layer``, strongest achieved activation first (``count`` of them).

    Raises :class:`SweepError` if ``folder`` holds no sweep, :class:`UnknownLayerError` for a bad name.
    """
    layer = layer_spec(layer).name
    entries = [entry for entry in _entries(Path(folder)) if entry["layer"] == layer]
    entries.sort(key=lambda entry: (-entry["activation"], entry["filter"]))
    return entries if count is None else entries[:count]


def load_pictures(folder: str | os.PathLike[str], entries: Sequence[dict[str, Any]]) -> np.ndarray:
    """The PNGs of ``entries`` as ``uint8[N, H, W, 3]``."""
    from PIL import Image

    pictures = []
    for entry in entries:
        with Image.open(Path(folder) / entry["png"]) as picture:
            pictures.append(np.asarray(picture.convert("RGB")))
    return np.stack(pictures) if pictures else np.zeros((0, 1, 1, 3), np.uint8)


def contact_sheet(
    pictures: np.ndarray, *, columns: int | None = None, tile: int = 64, gap: int = 2
) -> np.ndarray:
    """``uint8[N, H, W, 3]`` tiled into one ``uint8`` picture, each scaled to ``tile`` pixels high.

    ``columns`` defaults to a near-square layout; tiles are separated by ``gap`` white pixels.
    """
    from PIL import Image

    count = len(pictures)
    if count == 0:
        return np.full((tile, tile, 3), 255, np.uint8)
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    height, width = pictures.shape[1:3]
    tile_height, tile_width = tile, max(1, round(tile * width / height))
    sheet = np.full((rows * (tile_height + gap) + gap, columns * (tile_width + gap) + gap, 3), 255, np.uint8)
    for index, picture in enumerate(pictures):
        row, column = divmod(index, columns)
        small = Image.fromarray(picture).resize((tile_width, tile_height), Image.Resampling.LANCZOS)
        top, left = gap + row * (tile_height + gap), gap + column * (tile_width + gap)
        sheet[top : top + tile_height, left : left + tile_width] = np.asarray(small)
    return sheet


def write_atlas(folder: str | os.PathLike[str], *, tile: int = 64) -> Path:
    """Write ``sheets/<layer>.png`` for each swept layer and ``index.html``; returns the page's path.

    Raises :class:`SweepError` if ``folder`` holds no sweep, :class:`OutputError` if it is not writable.
    """
    folder = Path(folder)
    entries = _entries(folder)
    settings = json.loads((folder / SETTINGS_FILE).read_text())["settings"]
    layers: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        layers.setdefault(entry["layer"], []).append(entry)
    (folder / SHEETS_FOLDER).mkdir(exist_ok=True)
    summary = []
    for layer, layer_entries in layers.items():
        sheet = contact_sheet(load_pictures(folder, layer_entries), tile=tile)
        sheet_path = f"{SHEETS_FOLDER}/{layer}.png"
        atomic_write(folder / sheet_path, encode_png(sheet))
        summary.append(
            {
                "name": layer,
                "channels": layer_spec(layer).channels,
                "sheet": sheet_path,
                "filters": [
                    {"filter": e["filter"], "activation": round(e["activation"], 4), "png": e["png"]}
                    for e in layer_entries
                ],
            }
        )
    summary.sort(key=lambda layer: LAYER_NAMES.index(layer["name"]))
    page = _PAGE.replace("__TITLE__", html.escape(f"filterviz atlas: {folder.resolve().name}"))
    data = {"settings": settings, "layers": summary, "dead": DEAD_ACTIVATION}
    # Inline JSON inside <script>: "</" must not appear, or the browser would end the script there.
    page = page.replace("__DATA__", json.dumps(data, separators=(",", ":")).replace("</", "<\\/"))
    return atomic_write(folder / "index.html", page.encode())


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: #222; display: flex; min-height: 100vh; }
  nav { width: 15em; flex: none; background: #f4f4f4; padding: 1em; box-sizing: border-box; }
  nav a { display: flex; justify-content: space-between; padding: .2em .4em; color: inherit;
          text-decoration: none; border-radius: 3px; }
  nav a.current { background: #333; color: #fff; }
  nav small { color: #777; }
  main { flex: 1; padding: 1em 1.5em; }
  header { display: flex; gap: 1.5em; align-items: baseline; flex-wrap: wrap; margin-bottom: 1em; }
  h1 { font-size: 1.3em; margin: 0; }
  #grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(104px, 1fr)); gap: 10px; }
  figure { margin: 0; text-align: center; }
  figure img { width: 100%; image-rendering: auto; display: block; border-radius: 2px; }
  figcaption { font-size: 12px; color: #555; }
  figure.dead img { opacity: .35; }
  figure.dead figcaption::after { content: " dead"; color: #b00; }
  .settings { color: #666; font-size: 12px; }
</style>
</head>
<body data-loaded="0" data-failed="0">
<nav id="layers"><strong>Layers</strong></nav>
<main>
  <header>
    <h1 id="title"></h1>
    <label>Sort by <select id="sort">
      <option value="filter">filter index</option>
      <option value="strongest">activation, strongest first</option>
      <option value="weakest">activation, weakest first</option>
    </select></label>
    <a id="sheet" href="#">contact sheet</a>
    <span class="settings" id="settings"></span>
  </header>
  <div id="grid"></div>
</main>
<script id="atlas-data" type="application/json">__DATA__</script>
<script>
"use strict";
const atlas = JSON.parse(document.getElementById("atlas-data").textContent);
const grid = document.getElementById("grid");
const sortBox = document.getElementById("sort");
const s = atlas.settings;
document.getElementById("settings").textContent =
  `${s.height}x${s.width}, ${s.steps} steps of ${s.step_size}, ${s.precision}, ` +
  `start ${s.start}, seed ${s.seed}`;

function currentLayer() {
  const wanted = decodeURIComponent(location.hash.slice(1));
  return atlas.layers.find(layer => layer.name === wanted) || atlas.layers[0];
}

function count(name) {
  document.body.dataset[name] = String(Number(document.body.dataset[name]) + 1);
}

function render() {
  const layer = currentLayer();
  document.body.dataset.loaded = "0";
  document.body.dataset.failed = "0";
  grid.replaceChildren();
  if (!layer) { document.getElementById("title").textContent = "No filters yet"; return; }
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("current", link.dataset.layer === layer.name);
  }
  const dead = layer.filters.filter(f => f.activation <= atlas.dead).length;
  document.getElementById("title").textContent =
    `${layer.name}: ${layer.filters.length} of ${layer.channels} filters` + (dead ? `, ${dead} dead` : "");
  document.getElementById("sheet").href = layer.sheet;
  const filters = layer.filters.slice();
  const byFilter = (a, b) => a.filter - b.filter;
  if (sortBox.value === "strongest") filters.sort((a, b) => b.activation - a.activation || byFilter(a, b));
  if (sortBox.value === "weakest") filters.sort((a, b) => a.activation - b.activation || byFilter(a, b));
  for (const f of filters) {
    const figure = document.createElement("figure");
    figure.classList.toggle("dead", f.activation <= atlas.dead);
    const link = document.createElement("a");
    link.href = f.png;
    const img = document.createElement("img");
    img.alt = `${layer.name} filter ${f.filter}`;
    img.addEventListener("load", () => count("loaded"));
    img.addEventListener("error", () => count("failed"));
    img.src = f.png;
    link.append(img);
    const caption = document.createElement("figcaption");
    caption.textContent = `${f.filter} · ${f.activation.toFixed(2)}`;
    figure.append(link, caption);
    grid.append(figure);
  }
  document.body.dataset.rendered = String(filters.length);
}

for (const layer of atlas.layers) {
  const link = document.createElement("a");
  link.href = "#" + layer.name;
  link.dataset.layer = layer.name;
  link.innerHTML = `<span></span><small></small>`;
  link.firstChild.textContent = layer.name;
  link.lastChild.textContent = `${layer.filters.length}/${layer.channels}`;
  document.getElementById("layers").append(link);
}
sortBox.addEventListener("change", render);
window.addEventListener("hashchange", render);
render();
</script>
</body>
</html>
"""
