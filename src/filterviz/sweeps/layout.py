"""The names a sweep folder may hold, and nothing else: what filterviz writes where.

sweep.json                  the settings record (``format`` and ``settings``)
manifest.jsonl              one JSON line per finished filter; ``manifest.p<i>.jsonl`` per process
<layer>/<NNNN>.png          a filter's picture (``.npy``: its float32 image, on request)
sheets/<layer>.png          contact sheets          (written by filterviz.sweeps.atlas)
index.html                  the atlas page          (``atlas.html`` if the folder had its own index.html)
atlas/<layer>.js            the page's data for one layer
.filterviz.lock             held by the process writing the folder
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from filterviz.core.network import Network
from filterviz.errors import SettingError

SETTINGS_FILE = "sweep.json"


SHEETS_FOLDER = "sheets"


PAGE = "index.html"


OTHER_PAGE = "atlas.html"
"""Where the atlas page goes when the folder holds an ``index.html`` filterviz did not write."""


DATA_FOLDER = "atlas"
"""Where the atlas page's per-layer data files go: ``atlas/<layer>.js``."""


_MANIFEST_NAME = re.compile(r"manifest(\.p\d+)?\.jsonl")


SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
"""A layer name that can name a folder inside the sweep's (no separator, no leading dot)."""


PICTURE_NAME = re.compile(r"(\d{4,})\.(png|npy)")


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


def folder_safe(name: object) -> bool:
    """Whether ``name`` (a layer's) can name a folder inside the output folder: no separator, no leading
    dot, nothing but letters, digits, ``_``, ``.`` and ``-``."""
    return isinstance(name, str) and SAFE_NAME.fullmatch(name) is not None


def select_layers(network: Network, layers: Iterable[str] | str | None) -> list[str]:
    """The layers a sweep or a dataset pass covers, in the order given, each checked: ``None`` means the
    network's visual layers, one string is one layer (not its letters), and an empty selection, a name
    twice or a name that cannot name a folder is a :class:`SettingError`."""
    if isinstance(layers, str):
        layers = [layers]
    try:
        names = [network.layer(name).name for name in (network.visual_layers if layers is None else layers)]
    except TypeError:
        raise SettingError(f"layers must be a layer name or a list of them, got {layers!r}") from None
    if not names:
        raise SettingError("no layers chosen; name at least one, or leave layers out for all")
    if len(set(names)) != len(names):
        raise SettingError(f"a layer is named twice in {names}")
    for name in names:
        if not folder_safe(name):
            raise SettingError(f"layer {name!r} cannot name a folder of pictures; choose other layers")
    return names
