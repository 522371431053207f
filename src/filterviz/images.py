"""Images in and out: reading photos, writing pictures, GIFs and arrays (the pure conversions between
pixels and pictures are in :mod:`filterviz.pictures`).

Reading is defensive: only regular files are opened (a FIFO would block), photos above
:data:`MAX_PIXELS` are refused before they are decoded, EXIF orientation is applied. Writing never
clobbers: the type follows the extension, an existing directory, device, FIFO or symbolic link at the
path is refused, and every file appears by rename, complete, with the usual permissions.
"""

from __future__ import annotations

import io
import math
import os
import stat
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np

from filterviz.errors import ImageError, OutputError, SettingError

MAX_PIXELS = 64_000_000
"""Photos with more pixels than this are refused unless a larger ``max_pixels`` is given (64 MP)."""


def _file_kind(mode: int) -> str:
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


def load_image(path: str | os.PathLike[str], *, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read a photo (any format Pillow reads) as ``float32[H, W, 3]``, RGB, 0-255, upright.

    The EXIF orientation is applied, as viewers show the photo. Only a regular file is opened, and a
    photo of more than ``max_pixels`` pixels (None: no limit but Pillow's own against decompression
    bombs) is refused from its header, before it is decoded.

    Raises :class:`ImageError` if the file is missing, not a regular file, too large or not a readable
    image.
    """
    return np.asarray(_read(path, max_pixels, lambda picture: picture), dtype=np.float32)


FITS = ("crop", "resize")
"""How a photo becomes ``size x size``: scale its shorter side and crop the middle, or scale each side."""


def load_fitted(
    path: str | os.PathLike[str], size: int, fit: str = "crop", *, max_pixels: int | None = MAX_PIXELS
) -> np.ndarray:
    """Read a photo as ``uint8[size, size, 3]``, RGB, upright: ``crop`` scales its shorter side to
    ``size`` and keeps the middle, ``resize`` scales each side (bicubic, in one resampling).

    A JPEG is decoded at the smallest of its built-in reductions (1/2, 1/4, 1/8) that still covers
    ``size``, which makes large photos several times cheaper to read. Refuses what :func:`load_image`
    refuses, with the same :class:`ImageError`.
    """
    from PIL import Image

    if fit not in FITS:
        raise SettingError(f"unknown fit {fit!r}; choose one of {', '.join(FITS)}")

    def fitted(picture):
        width, height = picture.size
        if fit == "resize":
            box = (0, 0, width, height)
        else:
            side = min(width, height)
            box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
        return picture.resize((size, size), Image.Resampling.BICUBIC, box=box)

    def needed(width: int, height: int) -> tuple[int, int]:
        # The decoded size that still covers `size` where it will be resampled from.
        if fit == "resize":
            return min(width, size), min(height, size)
        scale = size / min(width, height)
        return min(width, math.ceil(width * scale)), min(height, math.ceil(height * scale))

    return np.asarray(_read(path, max_pixels, fitted, needed))


def _read(path, max_pixels: int | None, finish, draft=None):
    # The photo at `path`, upright and RGB, passed through `finish`; every refusal an ImageError. With
    # `draft` (width, height -> the size still needed), a JPEG is decoded reduced.
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except OSError as error:
        raise ImageError(path, f"cannot read image ({error.strerror or error})") from None
    if not stat.S_ISREG(mode):
        raise ImageError(path, f"is {_file_kind(mode)}, not an image file")
    try:
        with warnings.catch_warnings():
            # Pillow warns past its own limit; filterviz's limit (or Pillow's error) decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as picture:
                width, height = picture.size
                if max_pixels is not None and width * height > max_pixels:
                    raise ImageError(
                        path,
                        f"{width}x{height} is {width * height / 1e6:.1f} megapixels, more than the "
                        f"{max_pixels / 1e6:.1f} allowed; shrink the photo or raise the limit "
                        "(--max-pixels, or max_pixels=)",
                    )
                if draft is not None and picture.format == "JPEG":
                    # The EXIF rotation swaps sides, not the scale needed: the reduction is the same.
                    picture.draft("RGB", draft(width, height))
                upright = ImageOps.exif_transpose(picture)
                return finish(upright.convert("RGB"))
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageError(path, f"refused as a decompression bomb ({error})") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not an image Pillow can read") from None
    except MemoryError:
        raise ImageError(path, "too large to decode in this machine's memory") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(path, f"cannot read image ({error})") from None


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``float32[H, W, 3]`` resized to ``float32[height, width, 3]`` (bicubic, each channel in float)."""
    from PIL import Image

    channels = [
        np.asarray(
            Image.fromarray(np.asarray(image, np.float32)[..., c]).resize(
                (width, height), Image.Resampling.BICUBIC
            )
        )
        for c in range(3)
    ]
    return np.stack(channels, axis=-1)


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


def check_writable(path: str | os.PathLike[str], formats: Mapping[str, str] | None = None) -> Path:
    """Raise :class:`OutputError` now, before any work, if ``path`` cannot or must not be written later.

    Refused: an extension outside ``formats`` (when given), a missing or read-only folder, and anything
    but a regular file already at ``path``: a directory, a device, a FIFO, a socket or a symbolic link
    (which a rename would replace, not write through).
    """
    path = Path(path)
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
        raise OutputError(path, f"is {_file_kind(mode)}; filterviz writes only regular files")
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
            return picture.format == "PNG" and picture.text.get("Software") == SOFTWARE
    except (OSError, SyntaxError, ValueError):
        return False


def encode_npy(array: np.ndarray | jax.Array) -> bytes:
    """The ``.npy`` bytes of ``array`` as float32."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, np.float32))
    return buffer.getvalue()


def save_picture(picture: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Save ``uint8[H, W, 3]`` atomically (see :func:`atomic_write`) as the type its extension names:
    ``.png``, ``.jpg``/``.jpeg`` or ``.gif``; any other extension is an :class:`OutputError`."""
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
