"""A layer's activation vectors kept on disk in shards, so memory does not grow with the dataset.

Shard ``n`` is two ``.npy`` files in ``vectors/``: ``vectors-n.npy float32[m, C]`` and ``places-n.npy
int32[m, 3]`` (each vector's image, row and column in the layer's map). They are read as memory maps;
a minibatch gathers its rows shard by shard. :class:`InMemory` serves an array the same way, so a fit
streamed from disk and one on an array in memory see the same minibatches.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from filterviz.errors import OutputError
from filterviz.io.files import atomic_write, encode_npy

FOLDER = "vectors"


def shard_paths(folder: Path, number: int) -> tuple[Path, Path]:
    """Where shard ``number``'s vectors and places are kept."""
    return folder / FOLDER / f"vectors-{number:05d}.npy", folder / FOLDER / f"places-{number:05d}.npy"


def write_shard(folder: Path, number: int, vectors: np.ndarray, places: np.ndarray) -> None:
    """Shard ``number``: ``vectors float32[m, C]`` and ``places int[m, 3]``, each written atomically."""
    vectors_path, places_path = shard_paths(folder, number)
    vectors_path.parent.mkdir(exist_ok=True)
    atomic_write(places_path, encode_npy(np.asarray(places, np.int32)), durable=False)
    atomic_write(vectors_path, encode_npy(np.asarray(vectors, np.float32)))


class InMemory:
    """Vectors ``float32[N, C]`` (and their ``places int[N, 3]``) held in memory, served as shards are."""

    def __init__(self, vectors: np.ndarray, places: np.ndarray | None = None) -> None:
        self.vectors = np.asarray(vectors, np.float32)
        self.all_places = np.zeros((len(vectors), 3), np.int32) if places is None else np.asarray(places)

    @property
    def count(self) -> int:
        return len(self.vectors)

    @property
    def channels(self) -> int:
        return self.vectors.shape[1]

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """The vectors ``float32[n, C]`` at ``indices``."""
        return self.vectors[indices]

    def places(self, indices: np.ndarray) -> np.ndarray:
        """The places ``int32[n, 3]`` (image, row, column) of the vectors at ``indices``."""
        return self.all_places[indices]

    def blocks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first index, vectors)`` of consecutive blocks of at most ``size`` vectors."""
        for first in range(0, self.count, size):
            yield first, self.rows(np.arange(first, min(first + size, self.count)))


class Shards(InMemory):
    """The first ``count`` shards of a folder's ``vectors/``, read as memory maps; :class:`OutputError` if
    one is missing or not what filterviz wrote."""

    def __init__(self, folder: Path, count: int, channels: int) -> None:
        vectors, places = [], []
        for number in range(count):
            vectors_path, places_path = shard_paths(folder, number)
            try:
                vectors.append(np.load(vectors_path, mmap_mode="r", allow_pickle=False))
                places.append(np.load(places_path, mmap_mode="r", allow_pickle=False))
            except (OSError, ValueError) as error:
                raise OutputError(vectors_path, f"is not a shard filterviz can read ({error})") from None
            good = (
                vectors[-1].ndim == 2 and vectors[-1].shape[1] == channels and vectors[-1].dtype == np.float32
            )
            if not good or places[-1].shape != (len(vectors[-1]), 3):
                raise OutputError(vectors_path, "is not a shard of this layer's vectors; use another --out")
        self.shards, self.shard_places = vectors, places
        self.offsets = np.cumsum([0] + [len(v) for v in vectors])
        self._channels = channels

    @property
    def count(self) -> int:
        return int(self.offsets[-1])

    @property
    def channels(self) -> int:
        return self._channels

    def _gather(self, parts: list[np.ndarray], indices: np.ndarray, width: int, dtype: type) -> np.ndarray:
        indices = np.asarray(indices, np.int64)
        found: np.ndarray = np.empty((len(indices), width), dtype)
        shard_of = np.searchsorted(self.offsets, indices, side="right") - 1
        for shard in np.unique(shard_of):
            mine = shard_of == shard
            found[mine] = parts[shard][indices[mine] - self.offsets[shard]]
        return found

    def rows(self, indices: np.ndarray) -> np.ndarray:
        return self._gather(self.shards, indices, self.channels, np.float32)

    def places(self, indices: np.ndarray) -> np.ndarray:
        return self._gather(self.shard_places, indices, 3, np.int32)
