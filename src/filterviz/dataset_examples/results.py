"""What a dataset-examples pass keeps on disk: its running state (to resume after a kill), and its
results (each hit's crop, then ``examples.jsonl``), never over a file filterviz did not write."""

from __future__ import annotations

import json
import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from filterviz.core.hits import EMPTY, Statistics, field_at, receptive_field
from filterviz.core.network import Network, Params
from filterviz.errors import OutputError
from filterviz.io.files import atomic_write, check_no_links, encode_png, read_json, written_by_filterviz
from filterviz.io.photos import load_fitted
from filterviz.progress import Progress
from filterviz.sweeps.atlas import EXAMPLES_FILE, EXAMPLES_FOLDER


def hit_records(chosen: ExamplesPass, params: Params, paths: list[str], state) -> tuple[list[dict], dict]:
    # One record per (layer, filter), and where each hit's crop comes from.
    net, k, size = chosen.network, chosen.k, chosen.size
    records = []
    crops: dict[str, tuple[str, tuple[int, int, int, int]]] = {}
    for name in chosen.layers:
        (box, stride) = receptive_field(net, params, name)
        top, statistics = state[name]
        for channel in range(top.scores.shape[0]):
            hits = []
            for rank in range(k):
                image = int(top.images[channel, rank])
                if image == EMPTY:
                    break
                y, x = (int(v) for v in top.positions[channel, rank])
                crop = f"{EXAMPLES_FOLDER}/{name}/{channel:04d}_{rank}.png"
                hits.append(
                    {
                        "image": paths[image],
                        "y": y,
                        "x": x,
                        "activation": float(top.scores[channel, rank]),
                        "crop": crop,
                    }
                )
                crops[crop] = (paths[image], field_at(box, stride, y, x, size))
            records.append({"layer": name, "filter": channel, "hits": hits, **_summary(statistics, channel)})
    return records, crops


def _summary(statistics: Statistics, channel: int) -> dict[str, Any]:
    count = int(statistics.images_seen)
    return {
        "images": count,
        "mean": float(statistics.score_sum[channel]) / max(count, 1),
        "spatial_mean": float(statistics.mean_sum[channel]) / max(count, 1),
        "fired": int(statistics.fired[channel]) / max(count, 1),
        "histogram": [int(v) for v in statistics.histogram[channel]],
    }


CROP_NAME = re.compile(r"\d{4,}_\d+\.png")


def check_output(out: Path, layers: tuple[str, ...]) -> None:
    """Before any work: ``out`` is a folder (or will be), no link on the way to any crop folder, and
    nothing filterviz did not write where a result or a crop will go."""
    out = check_no_links(out)
    if out.exists() and not out.is_dir():
        raise OutputError(out, "is not a folder")
    result = out / EXAMPLES_FILE
    if os.path.lexists(result) and not _is_our_result(result):
        raise OutputError(result, "exists and was not written by filterviz; choose another --out")
    for layer in layers:
        folder = check_no_links(out, EXAMPLES_FOLDER, layer)
        for name in _crop_names(folder):
            if not written_by_filterviz(folder / name) or (folder / name).is_symlink():
                raise OutputError(
                    folder / name, "exists and was not written by filterviz; choose another --out"
                )


def _crop_names(folder: Path) -> list[str]:
    # The crop-named entries of a real folder (none where it is missing, or a link).
    if folder.is_symlink() or not folder.is_dir():
        return []
    return [name for name in os.listdir(folder) if CROP_NAME.fullmatch(name)]


def remove_stale_crops(out: Path, kept: set[str]) -> int:
    """Remove the crops filterviz wrote under ``out/examples`` that ``kept`` (relative paths) no longer
    names: those of an earlier run with another ``k`` or other layers. Never follows a link."""
    removed = 0
    root = out / EXAMPLES_FOLDER
    if root.is_symlink() or not root.is_dir():
        return 0
    for layer in sorted(os.listdir(root)):
        for name in _crop_names(root / layer):
            path = root / layer / name
            if (
                f"{EXAMPLES_FOLDER}/{layer}/{name}" not in kept
                and not path.is_symlink()
                and written_by_filterviz(path)
            ):
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def _is_our_result(path: Path) -> bool:
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with open(path, encoding="utf-8") as file:
            first = read_json(file.readline() or "null")
        return isinstance(first, dict) and {"layer", "filter", "hits"} <= set(first)
    except (OSError, ValueError):
        return False


def write_results(root: Path, result: Path, records, crops, chosen: ExamplesPass, shown: bool) -> None:
    # The crops first, then the result file that names them: a reader never finds a missing crop. Each
    # image is decoded once, for all of its crops, on the decoding threads.
    result.parent.mkdir(parents=True, exist_ok=True)
    by_image: dict[str, list[tuple[str, tuple[int, int, int, int]]]] = {}
    for crop, (image, field) in crops.items():
        target = result.parent / crop
        if os.path.lexists(target) and not written_by_filterviz(target):
            raise OutputError(target, "exists and was not written by filterviz; choose another --out")
        by_image.setdefault(image, []).append((crop, field))
    for layer in chosen.layers:
        check_no_links(result.parent, EXAMPLES_FOLDER, layer).mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def write_crops(image: str, wanted_crops: list[tuple[str, tuple[int, int, int, int]]]) -> None:
        fitted = load_fitted(root / image, chosen.size, chosen.fit)
        for crop, (top, left, bottom, right) in wanted_crops:
            picture = encode_png(fitted[top:bottom, left:right])
            # The layer folders were checked above; a rename replaces a link, never writes through it.
            written.append(atomic_write(result.parent / crop, picture, durable=False))

    try:
        with (
            ThreadPoolExecutor(chosen.workers) as pool,
            Progress(len(by_image), "image", "crops", enabled=shown) as bar,
        ):
            for finished in [pool.submit(write_crops, *item) for item in by_image.items()]:
                finished.result()  # a failure (a photo gone since the pass, a full disk) stops the write
                bar.update(1)
    except BaseException:
        for path in written:  # no crops that no result file names
            path.unlink(missing_ok=True)
        raise
    lines = "".join(json.dumps(record) + "\n" for record in records)
    atomic_write(result, lines.encode("utf-8"))
    remove_stale_crops(result.parent, set(crops))


class ExamplesPass(NamedTuple):
    # What one examples pass does: which network and layers, how hits are kept, how images are fitted.
    network: Network
    layers: tuple[str, ...]
    k: int
    size: int
    fit: str
    ranking: str
    batch_size: int
    workers: int
    weights: str = ""  # the params' content digest, where the pass writes (resume, a sweep's folder)
