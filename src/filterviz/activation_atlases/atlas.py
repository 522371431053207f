"""Activation atlases: the map of what a layer represents (Carter et al., Distill 2019).

Four stages, each resumable in the output folder:

1. **collect** a few activation vectors per image of a folder (random spatial positions, seeded by the
   image's index), streamed in batches as :func:`filterviz.examples` reads images, saved every so often
   (``vectors.npz``); the class of a vector is its image's first subfolder;
2. **lay out** the vectors in 2-D with UMAP (cosine metric, seeded; the ``atlas`` extra), saved
   (``layout.npy``);
3. **grid** the layout at each zoom level (:mod:`~filterviz.activation_atlases.cells`): cells with
   enough vectors keep their mean, count, class mix and nearest dataset patches (``patches/<vector>.png``);
4. **render** every kept cell's mean as a :func:`~filterviz.core.objectives.direction` objective, chunks of
   cells through one compiled program, each icon saved as it is drawn (``icons/g<grid>/<row>_<col>.png``),
   and keyed by its level and place, so a killed run resumes to the same pictures.

The page is ``atlas.html`` (:mod:`filterviz.activation_atlases.page`); ``activation-atlas.json`` records
the settings and the cells.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from filterviz.activation_atlases.cells import Cells, check_grid, class_mix, grid_cells, nearest_members
from filterviz.activation_atlases.checks import (
    LAYOUT,
    RECORD,
    VECTORS,
    check_folder,
    check_memory,
    clear_atlas,
    make_folder,
    saved_layout,
    zoom_levels,
)
from filterviz.activation_atlases.layout import UMAP_SETTINGS, check_layout_size, require_umap, umap_layout
from filterviz.activation_atlases.page import write_page
from filterviz.activation_atlases.vectors import collect
from filterviz.core.checks import check_count, check_params, check_seed
from filterviz.core.hits import field_at, receptive_field
from filterviz.core.methods import Method, get_method
from filterviz.core.network import Network, Params
from filterviz.core.objectives import direction
from filterviz.deprecation import renamed
from filterviz.errors import ImageError, SettingError
from filterviz.io.files import (
    atomic_write,
    check_no_links,
    encode_npy,
    encode_png,
    output_path,
    written_by_filterviz,
)
from filterviz.io.photos import IMAGE_SUFFIXES, check_fit, find_images, images_digest, load_fitted
from filterviz.io.spectrum import resolve_spectrum
from filterviz.jobs.drawing import draw_pictures
from filterviz.jobs.folder import FolderLock, write_ours
from filterviz.jobs.multihost import on_first, together
from filterviz.jobs.streaming import Reading
from filterviz.networks import get_network
from filterviz.networks.weights import content_digest
from filterviz.progress import wanted

PATCHES_PER_CELL = 4


class ActivationAtlas(NamedTuple):
    """What :func:`activation_atlas` returns.

    Attributes:
      vectors: ``float32[N, C]`` activation vectors; images: ``int[N]`` their image (index into
        ``paths``); positions: ``int[N, 2]`` their place (y, x) in the layer's map; labels: ``int[N]``
        their class (index into ``classes``).
      layout: ``float32[N, 2]``, the 2-D UMAP layout.
      levels: the :class:`~filterviz.activation_atlases.cells.Cells` of each grid, by cells per side.
      activations: per grid, ``float32[M]`` each icon's achieved direction objective.
      page: the ``atlas.html`` written.
    """

    vectors: np.ndarray
    images: np.ndarray
    positions: np.ndarray
    labels: np.ndarray
    classes: list[str]
    paths: list[str]
    layout: np.ndarray
    levels: dict[int, Cells]
    activations: dict[int, np.ndarray]
    page: Path


def icon_path(grid: int, row: int, column: int) -> str:
    """Where the icon of a cell is saved, relative to the folder."""
    return f"icons/g{grid}/{row}_{column}.png"


ICON_STEPS = 256
"""The Lucid method's steps for an icon unless ``steps`` is given (the preset's 512 are for a filter):
measured by ``bench/icon_steps.py`` on 64-pixel icons of block4_conv3 cells from real photos, 256 steps
reach 0.91 of 512's objective and pictures correlated 0.94 with 512's, in half the time; 128 reach 0.78
and 0.82."""


def render_icons(
    params: Params,
    network: Network,
    layer: str,
    levels: Sequence[Cells],
    method: Method,
    folder: Path,
    *,
    size: int,
    seed: int,
    chunk: int,
    shown: bool,
) -> list[np.ndarray]:
    """Each cell's mean, of every level, as a direction objective, the levels' cells packed into the same
    chunks of at most ``chunk`` per call of one compiled program (so only the last is short); icons
    already in ``folder`` are kept. With several processes each draws every so-many-th chunk. Returns, for
    each level, ``float32[M]`` achieved objectives (NaN where an icon was kept from an earlier run and its
    value was recorded there)."""
    owners = [(cells, m) for cells in levels for m in range(len(cells.counts))]
    means = np.concatenate([cells.means for cells in levels])
    for cells in levels:  # where every icon of a level goes
        check_no_links(folder, "icons", f"g{cells.grid}").mkdir(parents=True, exist_ok=True)

    def target(i: int) -> Path:
        cells, m = owners[i]
        return folder / icon_path(cells.grid, cells.rows[m], cells.columns[m])

    def key(i: int) -> int:  # a cell's key is its level and place
        cells, m = owners[i]
        return cells.grid * 1_000_000 + cells.rows[m] * cells.grid + cells.columns[m]

    achieved = draw_pictures(
        params, network, lambda rows: direction(layer, means[rows]), range(len(owners)), len(owners),
        target, key, method, folder, size=size, seed=seed, chunk=chunk, shown=shown, noun="icon",
        title=f"drawing the atlas ({', '.join(f'{c.grid}x{c.grid}' for c in levels)})",
    )  # fmt: skip
    ends = np.cumsum([len(cells.counts) for cells in levels])[:-1]
    return np.split(achieved, ends)


def save_patches(
    root: Path,
    paths: list[str],
    folder: Path,
    network: Network,
    params: Params,
    layer: str,
    images: np.ndarray,
    positions: np.ndarray,
    chosen: set[int],
    size: int,
    fit: str,
) -> None:
    """The receptive field of each chosen vector, cropped from its image, as ``patches/<vector>.png``."""
    box, stride = receptive_field(network, params, layer)
    (folder / "patches").mkdir(exist_ok=True)
    for vector in sorted(chosen):
        target = folder / f"patches/{vector}.png"
        if written_by_filterviz(target):
            continue
        y, x = (int(v) for v in positions[vector])
        photo = load_fitted(root / paths[images[vector]], size, fit)
        top, left, bottom, right = field_at(box, stride, y, x, size)
        write_ours(target, encode_png(photo[top:bottom, left:right]))


def _classes(paths: list[str]) -> tuple[list[str], np.ndarray]:
    # Each image's class: its first subfolder ("" for an image at the top of the folder).
    names = [path.split("/")[0] if "/" in path else "" for path in paths]
    classes = sorted(set(names))
    index = {name: i for i, name in enumerate(classes)}
    return classes, np.array([index[name] for name in names], np.int64)


def _cells_of_levels(vectors, layout, levels: list[int], grid: int, min_count: int) -> dict[int, Cells]:
    # Every level's cells; a zoom level finer than the data allow is left out, the main grid never is.
    cells = {}
    for level in levels:
        try:
            cells[level] = grid_cells(vectors, layout, level, min_count)
        except SettingError:
            if level == grid:
                raise
    return cells


def _layout(folder: Path, vectors: np.ndarray, seed: int) -> np.ndarray:
    # The UMAP layout, or the one an earlier run of this atlas saved (its record was checked); made by
    # process 0 and shared, so every process grids the same cells.
    check_layout_size(len(vectors))  # on every process: process 0 alone makes the layout

    def made() -> list:
        saved = folder / LAYOUT  # the record beside it says it is this atlas's (see check_folder)
        if os.path.lexists(saved):
            return saved_layout(saved, len(vectors)).tolist()
        layout = umap_layout(vectors, seed=seed)
        atomic_write(saved, encode_npy(layout), durable=False)
        return layout.tolist()

    return np.asarray(on_first(folder, made), np.float32)


def _cell_records(cells: Cells, mix: np.ndarray, classes: list[str], nearest: list[np.ndarray]) -> list[dict]:
    # What the record and the page say of each cell of one level: place, count, icon, classes, patches.
    records = []
    for m in range(len(cells.counts)):
        order = np.argsort(-mix[m], kind="stable")
        records.append({
            "row": int(cells.rows[m]),
            "column": int(cells.columns[m]),
            "count": int(cells.counts[m]),
            "icon": icon_path(cells.grid, cells.rows[m], cells.columns[m]),
            "classes": [[classes[c], int(mix[m, c])] for c in order if mix[m, c]],
            "purity": float(mix[m].max() / cells.counts[m]),
            "patches": [f"patches/{int(v)}.png" for v in nearest[m]],
        })  # fmt: skip
    return records


@renamed(icon_size="size", chunk="batch_size")
def activation_atlas(
    params: Params,
    images: str | os.PathLike[str],
    layer: str,
    *,
    out: str | os.PathLike[str],
    network: str | Network = "vgg16",
    method: str | Method = "lucid",
    size: int = 64,
    grid: int = 20,
    zoom: Sequence[int] | None = None,
    positions: int = 4,
    image_size: int = 224,
    fit: str = "crop",
    min_count: int = 3,
    seed: int = 0,
    image_batch_size: int = 32,
    batch_size: int = 16,
    progress: bool | None = None,
    save_seconds: float = 30.0,
    overwrite: bool = False,
    **settings: Any,
) -> ActivationAtlas:
    """The activation atlas of ``layer`` over the photos of ``images``, written into the folder ``out``.

    Args:
      params: the network's parameters.
      network: any network: built in, Keras, Flax, PyTorch.
      images: a folder of JPEG/PNG photos, searched recursively; a photo's first subfolder is its class.
      layer: the layer whose activation vectors are mapped.
      out: the output folder: ``atlas.html``, the icons, the patches, the record; run again to resume.
      grid: cells per side of the main grid; ``zoom`` the grids of every level (default
        ``(grid // 2, grid, 2 * grid)``), all from the same layout; a zoom level where no cell holds
        ``min_count`` vectors is left out (the main grid is then an error).
      method: how each cell is drawn (default ``lucid``, at 256 steps unless ``steps`` is given:
        ``ICON_STEPS``).
      size: the icons' side in pixels (default 64).
      positions: vectors per photo (random positions, seeded).
      image_size: the side photos are fitted to.
      fit: how photos are fitted: ``crop`` or ``resize``.
      min_count: a cell needs this many vectors to be drawn.
      seed: the positions, the layout and the icons.
      image_batch_size: photos per batch of the collect pass.
      batch_size: cells per compiled render call.
      progress: show a progress bar.
      save_seconds: how often the collect pass saves its progress into ``out``.
      overwrite: clear an atlas made with other settings from ``out`` and start again (only files the
        atlas wrote are deleted).
      **settings: the method's settings (:func:`filterviz.get_method`, e.g. ``steps``).

    With several processes joined by ``jax.distributed`` (call it with the same arguments in each,
    ``out`` a folder they share), each batch of photos is split over every device of every process,
    each process decoding only its own share; process 0 makes the layout and writes the shared files,
    and the processes draw alternate chunks of cells. Every process returns the whole atlas.

    Returns an :class:`ActivationAtlas`. Raises :class:`SettingError` for a setting that cannot work (a
    grid too fine for the data among them), :class:`ImageError` for a folder with no readable image,
    :class:`OutputError` for an ``out`` that holds another atlas or files filterviz did not write.
    """
    net = get_network(network)
    spec = net.layer(layer)  # UnknownLayerError, naming the valid ones
    check_params(net, params)
    levels = zoom_levels(check_grid(grid), zoom)
    for label, value, low in (
        ("positions", positions, 1),
        ("image_size", image_size, net.minimum_size(spec.name)),
        ("min_count", min_count, 1),
        ("image_batch_size", image_batch_size, 1),
        ("batch_size", batch_size, 1),
        ("size", size, 1),
    ):
        check_count(value, label, minimum=low)
    check_fit(fit)
    require_umap()
    if method == "lucid" and "steps" not in settings:
        settings = {**settings, "steps": ICON_STEPS}
    chosen = resolve_spectrum(get_method(method, **settings))
    root, folder = Path(images), output_path(out)
    paths = find_images(root, leave_out=folder)
    if not paths:
        raise ImageError(root, f"holds no images ({', '.join(IMAGE_SUFFIXES)})")
    photos = (image_size, image_batch_size, len(paths), positions)
    check_memory(net, spec.name, chosen, (size, batch_size), photos)
    settings = {
        "layer": spec.name,
        "network": net.name,
        "weights": content_digest(params, net),
        "images": paths,
        "images_digest": images_digest(root, paths),  # sizes and times: a changed photo is a new atlas
        "positions": positions,
        "image_size": image_size,
        "fit": fit,
        "seed": check_seed(seed),
        "levels": levels,
        "min_count": min_count,
        "icon_size": size,  # the record's key, as atlases written before name it
        "method": json.dumps(chosen.describe(), sort_keys=True),
        "umap": UMAP_SETTINGS,
    }
    first = jax.process_index() == 0  # with several processes, process 0 writes what all share
    shown = wanted(progress) and first
    with contextlib.ExitStack() as stack:
        with together(folder):  # every process stops if one must
            make_folder(folder)
            recorded = check_folder(folder, settings, overwrite)
            stack.enter_context(FolderLock(folder, "activation-atlas", active=first))
            if first and overwrite and recorded:
                clear_atlas(folder)
                recorded = False
            if first and not recorded:
                # Recorded before anything else is written, so all that follows is this atlas's own.
                atomic_write(folder / RECORD, json.dumps({"settings": settings, "levels": {}}).encode())
        reading = Reading(image_batch_size, image_size, fit, os.cpu_count() or 1)
        vectors, image_of, places = collect(
            net,
            params,
            spec.name,
            root,
            paths,
            reading,
            count=positions,
            seed=seed,
            progress_file=folder / VECTORS,
            settings=settings,
            shown=shown,
            save_seconds=save_seconds,
        )
        classes, label_of_image = _classes(paths)
        labels = label_of_image[image_of]
        layout = _layout(folder, vectors, seed)
        cells = _cells_of_levels(vectors, layout, levels, grid, min_count)
        levels = sorted(cells)
        nearest = {g: nearest_members(vectors, cells[g], PATCHES_PER_CELL) for g in levels}
        record: dict[str, Any] = {
            "settings": settings,
            "folder": root.name,
            "vectors": len(vectors),
            "classes": classes,
        }
        patched = {int(v) for g in levels for members in nearest[g] for v in members}

        def patches_and_record() -> None:
            save_patches(
                root, paths, folder, net, params, spec.name, image_of, places, patched, image_size, fit
            )
            # From here the layout is this atlas's: a rerun takes it up.
            atomic_write(folder / RECORD, json.dumps({**record, "levels": {}}).encode())

        on_first(folder, patches_and_record)
        drawn = render_icons(
            params, net, spec.name, [cells[g] for g in levels], chosen, folder, size=size, seed=seed,
            chunk=batch_size, shown=shown,
        )  # fmt: skip
        activations, record["levels"] = dict(zip(levels, drawn, strict=True)), {}
        for g in levels:
            mix = class_mix(labels, cells[g], len(classes))
            record["levels"][str(g)] = _cell_records(cells[g], mix, classes, nearest[g])

        def record_and_page() -> str:
            atomic_write(folder / RECORD, json.dumps(record).encode())
            return str(write_page(folder, record, grid))

        page = Path(on_first(folder, record_and_page))
    return ActivationAtlas(
        vectors, image_of, places, labels, classes, paths, layout, cells, activations, page
    )
