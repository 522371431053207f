"""What the processes of one ``jax.distributed`` run share: global arrays built from host values, and
agreeing or gathering small host values across processes. With one process each is a plain local step.

These run collectives: every process must call them, in the same order.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from filterviz.errors import FilterVizError, OutputError, SweepError


def host_copy(tree: Any) -> Any:
    """The host value of each fully replicated global array of ``tree``, read from this process's own
    first copy (a replicated array of several processes is not addressable as a whole)."""
    return jax.tree.map(lambda array: np.asarray(array.addressable_data(0)), tree)


def agree(flags: np.ndarray) -> np.ndarray:
    """Element-wise OR of a boolean array over all processes (itself with one process)."""
    if jax.process_count() == 1:
        return flags
    return np.asarray(np.asarray(multihost_utils.process_allgather(flags.astype(np.int32))).any(axis=0))


def gather(items: list[Any]) -> list[Any]:
    """Every process's list of JSON values, joined in process order (``items`` itself with one process)."""
    if jax.process_count() == 1:
        return items
    encoded = np.frombuffer(json.dumps(items).encode(), np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.array([encoded.size], np.int32)))[:, 0]
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: encoded.size] = encoded
    rows = np.asarray(multihost_utils.process_allgather(padded))
    return [
        item for row, length in zip(rows, lengths, strict=True) for item in json.loads(bytes(row[:length]))
    ]


def barrier(name: str) -> None:
    """Wait until every process got here (nothing with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def together(folder: Path) -> Iterator[None]:
    """Run a block on every process; if it fails on any process with a :class:`FilterVizError` (or an
    ``OSError``, told as an :class:`OutputError` of ``folder``), it fails on every process: with its own
    error there and a :class:`SweepError` saying so elsewhere, so no process goes on alone into a
    collective the others never reach."""
    problem: FilterVizError | None = None
    try:
        yield
    except FilterVizError as error:
        problem = error
    except OSError as error:
        problem = OutputError(folder, f"cannot be written ({error.strerror or error})")
    if agree(np.array([problem is not None]))[0]:
        raise problem or SweepError("another process of this run could not use its folder")


def check_same_progress(done: int, folder: Path | None) -> None:
    """Every process took up the same saved progress (``done`` items) from ``folder``; else the folder
    is not one they share, and each would go on from another point."""
    if len(set(gather([done]))) > 1:
        raise OutputError(folder, "is not the same folder for every process; give them a shared one")


def from_first(value: Any) -> Any:
    """Process 0's JSON value on every process (what the others pass is not used)."""
    if jax.process_count() == 1:
        return value
    return gather([value] if jax.process_index() == 0 else [])[0]


def on_first(folder: Path, write: Callable[[], Any]) -> Any:
    """``write()`` on process 0 alone, its JSON-ready result returned on every process; a failure there
    fails every process (:func:`together`)."""
    result = None
    with together(folder):
        if jax.process_index() == 0:
            result = write()
    return from_first(result)
