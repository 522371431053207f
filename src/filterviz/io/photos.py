"""Photos in: reading them defensively, fitting them to a size, resizing (the pure conversions between
pixels and pictures are in :mod:`filterviz.core.pictures`; writing is :mod:`filterviz.io.files`).

Only regular files are opened (a FIFO would block), photos above :data:`MAX_PIXELS` are refused before
they are decoded, and EXIF orientation is applied.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
import warnings
from pathlib import Path

import numpy as np

from filterviz.errors import ImageError, SettingError
from filterviz.io.files import file_kind

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
"""Files a folder's images are read from (any case)."""
MAX_PIXELS = 64_000_000
"""Photos with more pixels than this are refused unless a larger ``max_pixels`` is given (64 MP)."""


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


def check_fit(fit: object) -> str:
    """``fit`` if it is one of :data:`FITS`; else :class:`SettingError` listing them."""
    if not isinstance(fit, str) or fit not in FITS:
        raise SettingError(f"unknown fit {fit!r}; choose one of {', '.join(FITS)}")
    return fit


def images_digest(root: Path, paths: list[str]) -> str:
    """A digest of the images' names, sizes and modification times: an image changed since a pass was
    saved makes its saved work not resume (it would describe the old pixels)."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            info = os.stat(root / path)
            digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\n".encode(errors="surrogateescape"))
        except OSError:
            digest.update(f"{path}\0gone\n".encode(errors="surrogateescape"))
    return digest.hexdigest()


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

    check_fit(fit)

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

    if not isinstance(path, str | os.PathLike) or not str(os.fspath(path)):
        raise ImageError(repr(path), "is not a path to an image")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except OSError as error:
        raise ImageError(path, f"cannot read image ({error.strerror or error})") from None
    if not stat.S_ISREG(mode):
        raise ImageError(path, f"is {file_kind(mode)}, not an image file")
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


def find_images(
    folder: str | os.PathLike[str], *, leave_out: str | os.PathLike[str] | None = None
) -> list[str]:
    """Relative POSIX paths of the image files under ``folder``, recursively, sorted; symbolic links and
    anything but regular files are left out, and so is the folder ``leave_out`` (the crops of an output
    folder placed inside the images)."""
    root = Path(folder)
    try:
        if not stat.S_ISDIR(os.stat(root).st_mode):
            raise ImageError(root, "is not a folder of images")
    except FileNotFoundError:
        raise ImageError(root, "no such folder") from None
    skipped = Path(leave_out).resolve() if leave_out is not None else None
    found = []
    for directory, folders, files in os.walk(root, followlinks=False):
        folders[:] = sorted(name for name in folders if Path(directory, name).resolve() != skipped)
        for name in files:
            path = Path(directory, name)
            if path.suffix.lower() in IMAGE_SUFFIXES and stat.S_ISREG(os.lstat(path).st_mode):
                found.append(path.relative_to(root).as_posix())
    return sorted(found)
