"""The activation atlas page: every cell's icon at its place in the layout, sized by how many vectors it
holds, one zoom level per grid; a click shows the cell's count, class mix and dataset patches.

Like the sweep's atlas it opens from disk with no server. It trusts nothing from the record: the data
are JSON with ``<``, ``>`` and ``&`` escaped, shown as text (``textContent``), and the only pictures it
loads are paths of the forms ``icons/g<N>/<row>_<column>.png`` and ``patches/<N>.png``. A page at
``atlas.html`` that filterviz did not write is kept, and this one is written as
``activation-atlas.html`` instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from filterviz.errors import OutputError
from filterviz.io.files import atomic_write
from filterviz.jobs.folder import PAGE_MARK, page_written_by_filterviz
from filterviz.sweeps.atlas import inline_json

PAGE = "atlas.html"
OTHER_PAGE = "activation-atlas.html"

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">__MARK__
<meta http-equiv="Content-Security-Policy"
  content="default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>activation atlas</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1em; background: #fafafa; }
#map { position: relative; width: min(90vw, 90vh); aspect-ratio: 1; background: #fff;
  border: 1px solid #ccc; }
#map img { position: absolute; cursor: pointer; image-rendering: auto; }
#details img { width: 64px; height: 64px; margin: 2px; }
button.on { font-weight: bold; }
</style></head>
<body>
<h1 id="title"></h1>
<p id="about"></p>
<p id="zoom"></p>
<div id="map"></div>
<div id="details"><p id="summary">Click a cell.</p><ul id="mix"></ul><div id="patches"></div></div>
<script>
const DATA = __DATA__;
const ICON = /^icons\\/g[0-9]+\\/[0-9]+_[0-9]+\\.png$/, PATCH = /^patches\\/[0-9]+\\.png$/;
document.getElementById("title").textContent = "Activation atlas of " + DATA.layer;
document.getElementById("about").textContent = DATA.vectors + " activation vectors from " + DATA.images +
  " images of " + DATA.folder + ", laid out by UMAP; each icon draws its cell's mean direction.";
function show(level, cell) {
  document.getElementById("summary").textContent = "Cell (" + cell.row + ", " + cell.column + ") of the " +
    level + "x" + level + " grid: " + cell.count + " vectors, purity " + cell.purity.toFixed(2);
  const mix = document.getElementById("mix"); mix.replaceChildren();
  for (const [name, count] of cell.classes) {
    const item = document.createElement("li");
    item.textContent = (name === "" ? "(no class)" : name) + ": " + count; mix.appendChild(item);
  }
  const patches = document.getElementById("patches"); patches.replaceChildren();
  for (const path of cell.patches) {
    if (!PATCH.test(path)) continue;
    const picture = document.createElement("img"); picture.src = path; picture.alt = "dataset patch";
    patches.appendChild(picture);
  }
}
function draw(level) {
  const map = document.getElementById("map"); map.replaceChildren();
  const cells = DATA.levels[String(level)] || [];
  const most = Math.max(1, ...cells.map(cell => cell.count));
  for (const cell of cells) {
    if (!ICON.test(cell.icon)) continue;
    const side = 100 / level, scale = 0.35 + 0.65 * Math.sqrt(cell.count / most);
    const picture = document.createElement("img");
    picture.src = cell.icon; picture.alt = "cell " + cell.row + ", " + cell.column; picture.loading = "lazy";
    picture.style.width = picture.style.height = (side * scale) + "%";
    picture.style.left = (cell.column * side + side * (1 - scale) / 2) + "%";
    picture.style.top = ((level - 1 - cell.row) * side + side * (1 - scale) / 2) + "%";
    picture.addEventListener("click", () => show(level, cell));
    map.appendChild(picture);
  }
  for (const button of document.querySelectorAll("#zoom button"))
    button.className = button.dataset.level === String(level) ? "on" : "";
}
const zoom = document.getElementById("zoom");
for (const level of Object.keys(DATA.levels).map(Number).sort((a, b) => a - b)) {
  const button = document.createElement("button");
  button.textContent = level + "x" + level; button.dataset.level = String(level);
  button.addEventListener("click", () => draw(level)); zoom.appendChild(button);
}
draw(DATA.main);
// A link to one cell of the main grid: atlas.html#ROW,COLUMN.
const linked = /^#([0-9]+),([0-9]+)$/.exec(location.hash);
if (linked) {
  const cell = (DATA.levels[String(DATA.main)] || []).find(
    c => c.row === Number(linked[1]) && c.column === Number(linked[2]));
  if (cell) show(DATA.main, cell);
}
</script></body></html>
"""


def write_page(folder: Path, record: dict[str, Any], main: int) -> Path:
    """Write the page for an atlas ``record`` (as ``activation-atlas.json`` holds it), showing grid
    ``main`` first; returns its path."""
    path = folder / PAGE
    if path.exists() and not page_written_by_filterviz(path):
        path = folder / OTHER_PAGE
        if path.exists() and not page_written_by_filterviz(path):
            raise OutputError(path, "is a page filterviz did not write; it is kept: use another --out")
    settings = record["settings"]
    data = {
        "layer": settings["layer"],
        "folder": record.get("folder", ""),
        "images": len(settings["images"]),
        "vectors": record["vectors"],
        "main": main,
        "levels": record["levels"],
    }
    page = _TEMPLATE.replace("__MARK__", PAGE_MARK).replace("__DATA__", inline_json(data))
    return atomic_write(path, page.encode())
