"""MaCo's magnitude spectrum, in one place: read from a ``.npy`` file, fetched on first use (the one the
MaCo authors publish), computed from photos of your own (``filterviz spectrum``) and saved; and a
method whose spectrum is named resolved to it.

The published spectrum (the mean over ImageNet, ``float32[3, 512, 257]``) comes with no stated licence,
so filterviz downloads it from its publisher's address rather than shipping it; ``filterviz spectrum``
makes one from photos of your own.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from filterviz.core.methods import Method, get_method
from filterviz.core.parameterizations import IMAGENET, SPECTRUM_SIZE, Maco, Spectrum, image_spectrum
from filterviz.errors import ImageError, SettingError, WeightsError
from filterviz.io.download import download_file
from filterviz.io.files import atomic_write, check_writable, encode_npy
from filterviz.io.photos import IMAGE_SUFFIXES, find_images, load_fitted

SPECTRUM_URL = "https://storage.googleapis.com/serrelab/loupe/spectrums/imagenet_decorrelated.npy"
SPECTRUM_SHA256 = "a4810ea049ef9a0fe4e3f26660188e53222281879b333e8fd61377f7491aafc8"
SPECTRUM_FILE = "maco_imagenet_spectrum.npy"
SPECTRUM_VARIABLE = "FILTERVIZ_SPECTRUM"
LARGEST_SPECTRUM_BYTES = 64 << 20
"""A spectrum file larger than this is refused before it is read (the published one is 1.6 MB)."""


def spectrum_cache_dir() -> Path:
    """Where a fetched spectrum is kept: ``$XDG_CACHE_HOME/filterviz`` or ``~/.cache/filterviz``."""
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(home) / "filterviz"


def load_spectrum(path: str | os.PathLike[str]) -> Spectrum:
    """A :class:`Spectrum` from a ``.npy`` file of ``float32[3, S, S // 2 + 1]``; never unpickles.

    Raises :class:`WeightsError` naming the file when it is missing, not a plain array or of the wrong
    shape or values.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(path, "no such spectrum file")
    try:
        # Mapped first, so the size its header claims is checked before anything that size is read.
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
        if not isinstance(mapped, np.ndarray):
            raise ValueError(f"holds a {type(mapped).__name__}, not one array")
        too_large = max(path.stat().st_size, mapped.nbytes) > LARGEST_SPECTRUM_BYTES
        magnitude = None if too_large else np.array(mapped)
    except (OSError, ValueError, EOFError) as error:
        raise WeightsError(path, f"is not a .npy array of numbers ({error})") from None
    if magnitude is None:
        raise WeightsError(path, f"is over {LARGEST_SPECTRUM_BYTES >> 20} MiB: not a spectrum")
    try:
        return Spectrum(magnitude, source=path.name)
    except SettingError as error:
        raise WeightsError(path, str(error)) from None


def imagenet_spectrum(
    *, download: bool = True, opener: Callable[..., Any] = urllib.request.urlopen, url: str = SPECTRUM_URL
) -> Spectrum:
    """The published ImageNet spectrum: ``$FILTERVIZ_SPECTRUM`` when set, else the cached copy, else
    downloaded from :data:`SPECTRUM_URL` (SHA-256 checked, renamed into place only when complete)."""
    if os.environ.get(SPECTRUM_VARIABLE):
        return load_spectrum(os.path.expanduser(os.environ[SPECTRUM_VARIABLE]))
    target = spectrum_cache_dir() / SPECTRUM_FILE
    by_hand = (
        f"without internet access, place the file from {SPECTRUM_URL} at {target}, set "
        f"{SPECTRUM_VARIABLE} to a spectrum file, or make one with 'filterviz spectrum PHOTOS --out F'"
    )
    if not target.is_file():
        if not download:
            raise WeightsError(None, f"MaCo's ImageNet spectrum is not at {target}; {by_hand}")
        download_file(
            url, target, digest=("sha256", SPECTRUM_SHA256), what="MaCo's ImageNet spectrum",
            by_hand=by_hand, opener=opener,
        )  # fmt: skip
    spectrum = load_spectrum(target)
    return dataclasses.replace(spectrum, source=IMAGENET)


def spectrum_of(choice: Spectrum | str | os.PathLike[str] | None) -> Spectrum | None:
    """A spectrum given as a :class:`Spectrum`, ``"imagenet"``, a ``.npy`` path, or None (the 1/f law)."""
    if choice is None or isinstance(choice, Spectrum):
        return choice
    if choice == IMAGENET:
        return imagenet_spectrum()
    return load_spectrum(choice)


def resolve_spectrum(method: Method) -> Method:
    """``method`` with a MaCo spectrum named by ``"imagenet"`` or a path replaced by the one it names."""
    parameterization = method.parameterization
    if not isinstance(parameterization, Maco) or not isinstance(parameterization.spectrum, str | os.PathLike):
        return method
    loaded = dataclasses.replace(parameterization, spectrum=spectrum_of(parameterization.spectrum))
    return dataclasses.replace(method, parameterization=loaded)


def maco(spectrum: Spectrum | str | os.PathLike[str] | None = IMAGENET, **settings: Any) -> Method:
    """The ``maco`` preset with this magnitude spectrum (``"imagenet"``: the published one; a path to a
    ``.npy`` from ``filterviz spectrum``; None: the 1/f law) and any other :class:`Method` setting.

    >>> maco(None, steps=8).steps
    8
    """
    preset = get_method("maco").parameterization
    assert isinstance(preset, Maco)
    parameterization = dataclasses.replace(preset, spectrum=spectrum_of(spectrum))
    return get_method("maco", parameterization=parameterization, **settings)


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
