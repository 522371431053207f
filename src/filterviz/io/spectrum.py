"""A magnitude spectrum from photos, for MaCo (``filterviz spectrum``), and saving one as ``.npy``
(reading and fetching: :mod:`filterviz.networks.spectrum`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from filterviz.core.parameterizations import SPECTRUM_SIZE, Spectrum, image_spectrum
from filterviz.errors import ImageError, SettingError
from filterviz.io.files import atomic_write, check_writable, encode_npy
from filterviz.io.photos import IMAGE_SUFFIXES, find_images, load_fitted


def compute_spectrum(folder: str | os.PathLike[str], *, size: int = SPECTRUM_SIZE) -> tuple[Spectrum, int]:
    """The mean magnitude spectrum of the photos under ``folder``, each centre-cropped to ``size``
    square: ``(Spectrum float32[3, size, size // 2 + 1], photos used)``. Unreadable photos are skipped;
    a folder with none readable is an :class:`ImageError`."""
    if not isinstance(size, int) or not 8 <= size <= 4096:
        raise SettingError(f"a spectrum's size is a whole number from 8 to 4096, got {size!r}")
    root = Path(folder)
    total, used = np.zeros((3, size, size // 2 + 1), np.float64), 0
    for relative in find_images(root):
        try:
            photo = load_fitted(root / relative, size, "crop")
        except ImageError:
            continue
        total += image_spectrum(photo.astype(np.float32) / 255.0)
        used += 1
    if used == 0:
        raise ImageError(root, f"holds no readable images ({', '.join(IMAGE_SUFFIXES)})")
    return Spectrum((total / used).astype(np.float32), source=root.name or str(root)), used


def check_spectrum_path(path: str | os.PathLike[str]) -> Path:
    """``path`` if a spectrum can be written there (a ``.npy`` file in a writable folder), before any work."""
    if Path(path).suffix.lower() != ".npy":
        raise SettingError(f"a spectrum is saved as .npy, got {os.fspath(path)!r}")
    return check_writable(path)


def save_spectrum(spectrum: Spectrum, path: str | os.PathLike[str]) -> Path:
    """Write ``spectrum`` as a ``.npy`` file, atomically."""
    return atomic_write(check_spectrum_path(path), encode_npy(spectrum.magnitude))
