"""What the processes of one ``jax.distributed`` run share: global arrays built from host values, and
agreeing or gathering small host values across processes. With one process each is a plain local step.

These run collectives: every process must call them, in the same order.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding


def global_array(value: Any, sharding: NamedSharding) -> jax.Array:
    """A global array of a host value every process holds; each places the parts its devices hold."""
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def host_copy(tree: Any) -> Any:
    """The host value of each fully replicated global array of ``tree``, read from this process's own
    first copy (a replicated array of several processes is not addressable as a whole)."""
    return jax.tree.map(lambda array: np.asarray(array.addressable_data(0)), tree)


def agree(flags: np.ndarray) -> np.ndarray:
    """Element-wise OR of a boolean array over all processes (itself with one process)."""
    if jax.process_count() == 1:
        return flags
    return np.asarray(multihost_utils.process_allgather(flags.astype(np.int32))).any(axis=0)


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
