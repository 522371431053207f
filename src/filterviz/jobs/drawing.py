"""Drawing many objectives into a job folder's PNGs: chunks through one compiled program, split over
processes, each picture kept if filterviz drew it before."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np

from filterviz.core.engine import filter_keys
from filterviz.core.methods import Method
from filterviz.core.network import Network, Params
from filterviz.core.objectives import Objective
from filterviz.draw.rendering import render
from filterviz.io.files import encode_png, written_by_filterviz
from filterviz.jobs.folder import write_ours
from filterviz.jobs.multihost import from_first, gather, together
from filterviz.progress import Progress, count_of, shared


def draw_pictures(
    params: Params,
    network: Network,
    objective_of: Callable[[list[int]], Objective],
    items: Sequence[int],
    count: int,
    target_of: Callable[[int], Path],
    key_of: Callable[[int], int],
    method: Method,
    folder: Path,
    *,
    size: int,
    seed: int,
    chunk: int,
    shown: bool,
    noun: str,
    title: str,
) -> np.ndarray:
    """Draw item ``i`` of ``items`` (ints below ``count``) through ``objective_of(rows)``, at most ``chunk``
    items per call of one compiled program, into ``target_of(i)``; pictures filterviz
    already wrote are kept. Item ``i``'s key is ``fold_in(key(seed), key_of(i))``: the same picture
    whichever chunk, process or run draws it. With several processes each draws every so-many-th chunk.

    Returns ``float32[count]``: each item's achieved objective, NaN where its picture was kept or it is
    not among ``items``."""
    achieved = np.full(count, np.nan, np.float32)
    todo = from_first([i for i in items if not written_by_filterviz(target_of(i))])  # before any writes
    chunk = balanced_chunk(len(items), chunk)  # of every item, so that a resumed run compiles the same
    chunks = [todo[begin : begin + chunk] for begin in range(0, len(todo), chunk)]
    mine = chunks[jax.process_index() :: jax.process_count()]
    drawn_values = []
    per_item = method.steps * (method.octaves.stages if method.octaves else 1)
    total = sum(map(len, mine)) * per_item  # the bar counts steps, so it moves within a chunk
    described = f"{title}, {count_of(sum(map(len, mine)), noun)}"
    with together(folder), Progress(total, "step", described, enabled=shown) as bar, shared(bar):
        for rows in mine:
            padded = rows + rows[-1:] * (chunk - len(rows))
            keys = filter_keys(seed, [key_of(i) for i in padded])
            drawn = render(
                params,
                objective_of(padded),
                network=network,
                method=method,
                size=size,
                keys=keys,
                batch_size=chunk,
                progress=False,
            )
            for offset, i in enumerate(rows):
                write_ours(target_of(i), encode_png(drawn.pictures[offset, 0]))
                drawn_values.append([i, float(drawn.activations[offset])])
    for i, value in gather(drawn_values):
        achieved[int(i)] = value
    return achieved


def balanced_chunk(count: int, most: int) -> int:
    """Items per chunk for ``count`` items, at most ``most`` each, in as few chunks as ``most`` allows and
    all but the last full: the last is padded by fewer than one item per chunk, not up to ``most``.

    >>> balanced_chunk(20, 16), balanced_chunk(48, 16), balanced_chunk(3, 16), balanced_chunk(0, 16)
    (10, 16, 3, 1)
    """
    if count <= 0:
        return 1
    chunks = -(-count // most)
    return -(-count // chunks)
