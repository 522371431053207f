"""Typed exceptions for user errors.

Every error a user can cause (a bad layer name, a filter index out of range, an unreadable image, a
missing or damaged weights file, an output that cannot be written) is raised as a subclass of
:class:`FilterVizError`, so a caller can catch them all at once and the CLI can turn them into one line
on stderr. Each also subclasses the built-in exception a Python user would expect (``KeyError``,
``IndexError``, ``OSError``, ``ValueError``).

A sweep adds :class:`SweepError`: a folder that holds a sweep made with other settings.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence


def first_line(error: BaseException) -> str:
    """Another library's exception as one line: its type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".strip().rstrip(":")


def printable(text: object) -> str:
    """``text`` with control characters (newlines, terminal escapes) written as escapes, for one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))


class FilterVizError(Exception):
    """Base class of every error filterviz raises for bad input."""

    def __str__(self) -> str:  # KeyError quotes its message; the others print it as is.
        return str(self.args[0]) if self.args else ""


class UnknownLayerError(FilterVizError, KeyError):
    """A layer name the network does not have (or that has no filters, where filters are needed)."""

    def __init__(self, layer: object, valid: Sequence[str], network: str | None = None):
        self.layer = layer
        self.valid = tuple(valid)
        where = f" in {network}" if network else ""
        if len(self.valid) <= 24:
            listed = f"valid layers: {', '.join(self.valid)}"
        else:  # a long list helps nobody: the closest names, and where the rest are listed
            close = difflib.get_close_matches(str(layer), self.valid, n=4, cutoff=0.5)
            near = f"did you mean {', '.join(close)}? " if close else ""
            command = f"filterviz layers --model {network}" if network else "filterviz layers"
            listed = f"{near}{len(self.valid)} layers, listed by '{command}'"
        super().__init__(f"unknown layer {layer!r}{where}; {listed}")


class FilterIndexError(FilterVizError, IndexError):
    """A filter index outside ``0 .. channels - 1`` of its layer."""

    def __init__(self, layer: str, index: int, channels: int):
        self.layer = layer
        self.index = index
        self.channels = channels
        super().__init__(
            f"filter {index} is out of range for {layer}, which has {channels} filters "
            f"(valid: 0-{channels - 1})"
        )


class WeightsError(FilterVizError, OSError):
    """A weights file that is missing, unreadable, truncated, foreign or not the network's."""

    def __init__(self, path: object, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path is not None else reason)


class ImageError(FilterVizError, OSError):
    """An image file that cannot be read or decoded, or an image array of the wrong shape."""

    def __init__(self, path: object, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path is not None else reason)


class OutputError(FilterVizError, OSError):
    """An output path that cannot be written."""

    def __init__(self, path: object, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class SettingError(FilterVizError, ValueError):
    """An option value out of its domain: a precision filterviz does not know, a negative step count."""


class SweepError(FilterVizError, ValueError):
    """A sweep that cannot go on as asked, e.g. its folder holds a sweep made with other settings."""
