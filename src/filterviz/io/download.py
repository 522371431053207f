"""Downloading a published file: streamed beside its target, checked against its digest, renamed into
place only when complete, so no partial or corrupt file is ever left under the final name (the network
weights, :mod:`filterviz.networks.weights`; MaCo's spectrum, :mod:`filterviz.io.spectrum`)."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filterviz.errors import WeightsError


def download_file(
    url: str,
    target: Path,
    *,
    digest: tuple[str, str | None],
    what: str,
    by_hand: str,
    opener: Callable[..., Any] = urllib.request.urlopen,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``target``; ``digest`` is ``(hashlib algorithm, expected hex)`` (None: no check).

    Raises :class:`WeightsError` on a network failure, a short transfer or a digest mismatch, its
    message ending with ``by_hand`` (where to put the file without internet access). The folders this
    download creates go again if it fails: nothing is left.
    """
    algorithm, expected_digest = digest
    directory = target.parent
    created = [folder for folder in (directory, *directory.parents) if not folder.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        temporary = tempfile.NamedTemporaryFile(
            dir=directory, prefix=f".{target.name}.", suffix=".part", delete=False
        )
    except OSError as error:
        _remove_empty(created)
        raise WeightsError(target, f"cannot write the download ({error.strerror or error})") from None
    try:
        with temporary:
            try:
                received, expected, found = _stream(
                    opener(url, timeout=timeout), temporary, target, hashlib.new(algorithm)
                )
            except WeightsError:
                raise
            except (urllib.error.URLError, OSError, ValueError) as error:
                reason = getattr(error, "reason", None) or error
                raise WeightsError(
                    None, f"could not download {what} from {url} ({reason}); {by_hand}"
                ) from None
            temporary.flush()
            os.fsync(temporary.fileno())
        if expected is not None and received != expected:
            raise WeightsError(
                None, f"download from {url} stopped after {received:,} of {expected:,} bytes; {by_hand}"
            )
        if expected_digest is not None and found != expected_digest:
            raise WeightsError(
                None, f"download from {url} has {algorithm} {found}, expected {expected_digest}; {by_hand}"
            )
        os.replace(temporary.name, target)
    finally:
        if os.path.exists(temporary.name):
            os.unlink(temporary.name)
        if not target.exists():
            _remove_empty(created)
    return target


def _progress_bar(total: int | None, description: str) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency, but a bar is never essential
        return None
    return tqdm(
        total=total, unit="B", unit_scale=True, desc=description, disable=not sys.stderr.isatty(), leave=False
    )


def _stream(connection: Any, temporary: Any, target: Path, digest: Any) -> tuple[int, int | None, str]:
    """Copy a response into ``temporary``, with a bar on a terminal: ``(bytes received, bytes announced
    or None, hex digest)``. A failure to write is a :class:`WeightsError`; the connection's own errors
    pass."""
    received = 0
    with connection as response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length else None
        bar = _progress_bar(expected, target.name)
        while chunk := response.read(1 << 20):
            try:
                temporary.write(chunk)
            except OSError as error:
                raise WeightsError(target, f"cannot write the download ({error.strerror or error})") from None
            digest.update(chunk)
            received += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
    return received, expected, digest.hexdigest()


def _remove_empty(folders: list[Path]) -> None:
    # Deepest first, and only while empty: a folder someone filled meanwhile stays.
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return
