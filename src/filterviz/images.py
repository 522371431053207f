"""Images in and out: the noise start, the notebook's deprocessing, reading photos, writing PNGs.

Pixel values in filterviz are ``float32[..., H, W, 3]`` on the 0-255 scale in RGB order, as the
notebook feeds them to the network; pictures for people are ``uint8[..., H, W, 3]``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from filterviz.errors import ImageError, OutputError


def random_image(
    key: jax.Array, height: int = 128, width: int = 128, mean: float = 127.0, std: float = 10.0
) -> jax.Array:
    """Gaussian noise around grey: ``float32[height, width, 3]`` with the given mean and std.

    >>> random_image(jax.random.key(0), 4, 6).shape
    (4, 6, 3)
    """
    return mean + std * jax.random.normal(key, (height, width, 3), jnp.float32)


def as_image(x: jax.Array | np.ndarray, spread: float = 0.1) -> np.ndarray:
    """The notebook's deprocessing: ``float[..., H, W, 3] -> uint8[..., H, W, 3]``, per image.

    Each image is centred, scaled to std ``spread`` (0.1 in the notebook, 0.25 in the later Keras
    example), shifted to 0.5, clipped to [0, 1] and scaled to 0-255 (truncated to integers, as
    ``astype('uint8')`` does in the notebook). The argument is not modified.

    >>> as_image(np.array([[[0.0, 1.0, 2.0]]])).tolist()
    [[[96, 127, 158]]]
    """
    x = np.array(x, dtype=np.float64, copy=True)
    if x.ndim < 3 or x.shape[-1] != 3:
        raise ImageError(None, f"expected [..., H, W, 3], got {x.shape}")
    axes = (-3, -2, -1)
    x -= x.mean(axis=axes, keepdims=True)
    x /= x.std(axis=axes, keepdims=True) + 1e-5
    x = np.clip(x * spread + 0.5, 0.0, 1.0) * 255.0
    return np.clip(x, 0, 255).astype(np.uint8)


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a photo (any format Pillow reads) as ``float32[H, W, 3]``, RGB, 0-255.

    Raises :class:`ImageError` if the file is missing or not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            return np.asarray(picture.convert("RGB"), dtype=np.float32)
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageError(path, "is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not an image Pillow can read") from None
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


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Raise :class:`OutputError` now, before any work, if ``path`` cannot be written later."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(path, "is a directory")
    if not folder.is_dir():
        raise OutputError(path, f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputError(path, f"folder {folder} is not writable")
    return path


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


def encode_png(picture: np.ndarray) -> bytes:
    """PNG bytes of ``uint8[H, W, 3]`` (or ``[H, W, 4]``)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(picture, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(picture: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Save ``uint8[H, W, 3]`` as a PNG, atomically (see :func:`atomic_write`)."""
    return atomic_write(path, encode_png(picture))


def clip_image(pixels: jax.Array | np.ndarray) -> np.ndarray:
    """Pixel values already on the 0-255 scale as ``uint8``: rounded and clipped, nothing rescaled."""
    return np.clip(np.round(np.asarray(pixels, np.float32)), 0, 255).astype(np.uint8)


def encode_gif(frames: np.ndarray, frame_ms: int = 100) -> bytes:
    """``uint8[F, H, W, 3]`` as a looping animated GIF, ``frame_ms`` per frame (the last held 1 s)."""
    import io

    from PIL import Image

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
    """Write ``uint8[F, H, W, 3]`` frames as an animated GIF at ``path`` (atomically)."""
    return atomic_write(path, encode_gif(frames, frame_ms))
