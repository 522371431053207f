"""Files out: pictures, GIFs, arrays and figures, written atomically and never over what is not ours.

The type follows the extension; an existing directory, device, FIFO or symbolic link at the path is
refused, and every file appears by rename, complete, with the usual permissions. Files filterviz writes
carry its mark (:func:`written_by_filterviz`), so it can tell them from the user's.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from filterviz.errors import ImageError, OutputError


def file_kind(mode: int) -> str:
    """What a ``stat`` mode is, in words (``"a directory"``, ``"a FIFO"`` ...)."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


PICTURE_FORMATS: Mapping[str, str] = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".gif": "GIF"}
"""Extensions a picture may be saved under, and Pillow's name of each format."""
FIGURE_FORMATS: Mapping[str, str] = {
    ".png": "png",
    ".jpg": "jpg",
    ".jpeg": "jpg",
    ".pdf": "pdf",
    ".svg": "svg",
}
"""Extensions a matplotlib figure may be saved under."""
ARRAY_FORMATS: Mapping[str, str] = {".npy": "NPY"}
"""Extensions a float image may be saved under, unquantised."""


def output_format(path: str | os.PathLike[str], formats: Mapping[str, str]) -> str:
    """The format ``path``'s extension names among ``formats``; :class:`OutputError` for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        raise OutputError(
            path,
            f"cannot tell what to write from the extension {suffix or '(none)'!r}; "
            f"use one of {', '.join(dict.fromkeys(formats))}",
        )
    return formats[suffix]


def read_json(text: str | bytes) -> object:
    """``json.loads`` for text from a file: :class:`ValueError` also for nesting too deep to parse (which
    ``json`` reports as a ``RecursionError``), so a hostile line is one bad line, not a crash."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def read_json_object(text: str | bytes) -> dict[str, Any]:
    """:func:`read_json` for a record that must be a JSON object: :class:`ValueError` for anything else."""
    record = read_json(text)
    if not isinstance(record, dict):
        raise ValueError(f"not a JSON object but {type(record).__name__}")
    return record


def output_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path; :class:`OutputError` for an empty one (an unset shell variable), which would
    name the current folder."""
    if not isinstance(path, str | os.PathLike) or not str(os.fspath(path)).strip():
        raise OutputError(repr(path), "is no path: give a file or folder to write")
    return Path(path)


def check_no_links(folder: str | os.PathLike[str], *parts: str) -> Path:
    """``folder / parts...``, after checking that neither ``folder`` nor any part below it that exists is a
    symbolic link, and that each part is one plain name: filterviz writes only inside an output folder,
    never through a link out of it. :class:`OutputError` otherwise."""
    path = output_path(folder)
    for part in ("", *parts):
        if part in (".", "..") or "/" in part or os.sep in part:
            raise OutputError(path / part, "is not a plain name inside the output folder")
        path = path / part if part else path
        if path.is_symlink():
            raise OutputError(path, "is a symbolic link; filterviz writes only inside its output folder")
    return path


def check_writable(path: str | os.PathLike[str], formats: Mapping[str, str] | None = None) -> Path:
    """Raise :class:`OutputError` now, before any work, if ``path`` cannot or must not be written later.

    Refused: an extension outside ``formats`` (when given), a missing or read-only folder, and anything
    but a regular file already at ``path``: a directory, a device, a FIFO, a socket or a symbolic link
    (which a rename would replace, not write through), and an empty path.
    """
    path = output_path(path)
    if formats is not None:
        output_format(path, formats)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as error:
        raise OutputError(path, f"cannot check ({error.strerror or error})") from None
    if mode is not None and not stat.S_ISREG(mode):
        raise OutputError(path, f"is {file_kind(mode)}; filterviz writes only regular files")
    if not folder.is_dir():
        raise OutputError(path, f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputError(path, f"folder {folder} is not writable")
    return path


def _read_umask() -> int:
    # os.umask both sets and returns the mask: read it once, while importing (no other thread yet).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()


TEMPORARY_SUFFIX = ".part"
"""Suffix of the hidden temporary files :func:`atomic_write` renames into place."""


def atomic_write(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Readers see the old file or the whole new one, never a part; a failed write leaves nothing behind.
    The rename alone is enough against a killed process; ``durable`` also syncs the data to disk first,
    against power loss, at a few milliseconds per file (sweeps writing thousands of files skip it).
    """
    path = check_writable(path)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX
    )
    try:
        os.fchmod(descriptor, _FILE_MODE)  # mkstemp makes files private (0600); outputs are not
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise OutputError(path, f"cannot write ({error.strerror or error})") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


SOFTWARE = "filterviz"
"""The ``Software`` text every PNG filterviz writes carries: how a sweep tells its own files apart."""


def encode_picture(picture: np.ndarray, format: str = "PNG") -> bytes:
    """``uint8[H, W, 3]`` (or ``[H, W, 4]``) as the bytes of a ``format`` file (PNG, JPEG or GIF).

    PNGs carry a ``Software: filterviz`` text chunk (:func:`written_by_filterviz` reads it).
    """
    from PIL import Image, PngImagePlugin

    image = Image.fromarray(np.asarray(picture, dtype=np.uint8))
    buffer = io.BytesIO()
    if format == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", SOFTWARE)
        image.save(buffer, format="PNG", pnginfo=info)
    elif format == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=95)
    else:
        image.save(buffer, format=format)
    return buffer.getvalue()


def encode_png(picture: np.ndarray) -> bytes:
    """PNG bytes of ``uint8[H, W, 3]`` (or ``[H, W, 4]``), marked as filterviz's."""
    return encode_picture(picture, "PNG")


def written_by_filterviz(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a regular file holding a PNG that filterviz wrote (its ``Software`` text)."""
    from PIL import Image

    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with Image.open(path) as picture:
            text = getattr(picture, "text", {})  # a PNG's text chunks; other formats have none
            return picture.format == "PNG" and text.get("Software") == SOFTWARE
    except (OSError, SyntaxError, ValueError):
        return False


def encode_npy(array: np.ndarray | jax.Array) -> bytes:
    """The ``.npy`` bytes of ``array`` as float32."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, np.float32))
    return buffer.getvalue()


def save_picture(picture: np.ndarray, path: str | os.PathLike[str], *, frame_ms: int = 100) -> Path:
    """Save ``uint8[H, W, 3]`` atomically (see :func:`atomic_write`) as the type its extension names:
    ``.png``, ``.jpg``/``.jpeg`` or ``.gif``; any other extension is an :class:`OutputError`. Frames
    ``uint8[F, H, W, 3]`` (an ascent's ``frames``) go to a ``.gif`` as a looping animation, ``frame_ms``
    per frame."""
    if np.ndim(picture) == 4:
        return save_gif(picture, path, frame_ms)
    return atomic_write(path, encode_picture(picture, output_format(path, PICTURE_FORMATS)))


def encode_gif(frames: np.ndarray, frame_ms: int = 100) -> bytes:
    """``uint8[F, H, W, 3]`` as a looping animated GIF, ``frame_ms`` per frame (the last held 1 s)."""
    from PIL import Image

    if not (isinstance(frame_ms, int) and 0 < frame_ms <= 65535):
        raise ImageError(None, f"frame_ms must be a whole number of milliseconds, 1-65535, got {frame_ms!r}")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ImageError(
            None, f"GIF frames must be uint8[F, H, W, 3], got {frames.dtype}{list(frames.shape)}"
        )
    pictures = [Image.fromarray(frame) for frame in frames]
    durations = [frame_ms] * (len(pictures) - 1) + [1000]
    buffer = io.BytesIO()
    pictures[0].save(
        buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=durations, loop=0
    )
    return buffer.getvalue()


def save_gif(frames: np.ndarray, path: str | os.PathLike[str], frame_ms: int = 100) -> Path:
    """Write ``uint8[F, H, W, 3]`` frames as an animated GIF at ``path`` (atomically; it must end .gif)."""
    output_format(path, {".gif": "GIF"})
    return atomic_write(path, encode_gif(frames, frame_ms))
