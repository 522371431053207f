"""The concept atlas page: one card per concept, most important first, with its picture, its strongest
dataset patches, where it fires on the photo of the strongest (a heatmap), how often it fires, its class
mix and its nearest concepts (links to their cards); above the cards, a 2-D map of all concepts, each a
link to its card.

Like the other pages it opens from disk with no server and trusts nothing from the record: the data are
JSON with ``<``, ``>`` and ``&`` escaped, shown as text (``textContent``), and the only pictures it loads
are paths of the forms ``pictures/concept-<N>.png``, ``heatmaps/concept-<N>.png`` and
``patches/<N>.png``. A ``concepts.html`` that
filterviz did not write is kept, and the page is not written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from filterviz.errors import OutputError
from filterviz.io.files import atomic_write
from filterviz.jobs.folder import PAGE_MARK, page_written_by_filterviz
from filterviz.sweeps.atlas import inline_json

PAGE = "concepts.html"

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">__MARK__
<meta http-equiv="Content-Security-Policy"
  content="default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>concepts</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1em; background: #fafafa; }
.card { display: inline-block; vertical-align: top; width: 300px; margin: 6px; padding: 6px;
  background: #fff; border: 1px solid #ccc; }
.card img.picture { width: 128px; height: 128px; }
.card img.patch { width: 56px; height: 56px; margin: 1px; }
.card:target { outline: 3px solid #36c; }
#map { position: relative; width: 480px; height: 480px; margin: 6px; background: #fff;
  border: 1px solid #ccc; }
#map a { position: absolute; width: 32px; height: 32px; margin: -16px 0 0 -16px; }
#map img { width: 32px; height: 32px; }
</style></head>
<body>
<h1 id="title"></h1>
<p id="about"></p>
<div id="map" title="every concept, similar ones close (the first two principal components of their
directions); each links to its card"></div>
<div id="cards"></div>
<script>
const DATA = __DATA__;
const PICTURE = /^pictures\\/concept-[0-9]+\\.png$/, PATCH = /^patches\\/[0-9]+\\.png$/;
const HEATMAP = /^heatmaps\\/concept-[0-9]+\\.png$/;
function percent(share) { return (100 * share).toFixed(0) + "%"; }
document.getElementById("title").textContent = "Concepts of " + DATA.layer;
document.getElementById("about").textContent = DATA.concepts.length + " concepts (" + DATA.kind +
  ") learned over " + DATA.vectors + " activation vectors of " + DATA.images + " images of " + DATA.folder +
  "; unexplained variance " + DATA.measures.unexplained_variance.toFixed(3) + ", mean L0 " +
  DATA.measures.mean_l0.toFixed(1) + "; " + percent(DATA.measures.pictures_own_code_largest) +
  " of the live concepts' pictures show their own concept most, " +
  percent(DATA.measures.pictures_above_best_vector) + " beat its strongest dataset vector; " +
  "most important first.";
function element(kind, text) {
  const made = document.createElement(kind); if (text !== undefined) made.textContent = text; return made;
}
const map = document.getElementById("map");
for (const concept of DATA.concepts) {
  const x = Number(concept.map[0]), y = Number(concept.map[1]);
  if (!(x >= 0 && x <= 1 && y >= 0 && y <= 1)) continue;
  const link = element("a"); link.href = "#concept-" + Number(concept.index);
  link.style.left = (16 + 448 * x) + "px"; link.style.top = (16 + 448 * y) + "px";
  if (PICTURE.test(concept.picture)) {
    const thumbnail = element("img"); thumbnail.src = concept.picture;
    thumbnail.alt = "concept " + concept.index + " on the map"; link.appendChild(thumbnail);
  }
  map.appendChild(link);
}
const cards = document.getElementById("cards");
for (const concept of DATA.concepts) {
  const card = element("div"); card.className = "card"; card.id = "concept-" + concept.index;
  card.appendChild(element("h3", "Concept " + concept.index));
  if (PICTURE.test(concept.picture)) {
    const picture = element("img"); picture.className = "picture"; picture.src = concept.picture;
    picture.alt = "concept " + concept.index + " drawn"; card.appendChild(picture);
  }
  if (typeof concept.heatmap === "string" && HEATMAP.test(concept.heatmap)) {
    const heat = element("img"); heat.className = "picture"; heat.src = concept.heatmap;
    heat.alt = "where concept " + concept.index + " fires on its strongest photo"; card.appendChild(heat);
  }
  card.appendChild(element("p", "fires on " + (100 * concept.frequency).toFixed(2) +
    "% of positions; importance " + concept.importance.toPrecision(3)));
  const patches = element("div");
  for (const path of concept.patches) {
    if (!PATCH.test(path)) continue;
    const patch = element("img"); patch.className = "patch"; patch.src = path; patch.alt = "dataset patch";
    patches.appendChild(patch);
  }
  card.appendChild(patches);
  const mix = element("ul");
  for (const [name, count] of concept.classes) mix.appendChild(element("li",
    (name === "" ? "(no class)" : name) + ": " + count));
  card.appendChild(mix);
  const near = element("p", "nearest: ");
  for (const other of concept.nearest) {
    const link = element("a", String(other)); link.href = "#concept-" + Number(other);
    near.appendChild(link); near.appendChild(document.createTextNode(" "));
  }
  card.appendChild(near);
  cards.appendChild(card);
}
</script></body></html>
"""


def write_page(folder: Path, data: dict[str, Any]) -> Path:
    """Write the page for the concepts ``data`` (as ``concepts.json`` holds them); returns its path."""
    path = folder / PAGE
    if path.exists() and not page_written_by_filterviz(path):
        raise OutputError(path, "is a page filterviz did not write; it is kept: use another --out")
    page = _TEMPLATE.replace("__MARK__", PAGE_MARK).replace("__DATA__", inline_json(data))
    return atomic_write(path, page.encode())
