"""Progress of long runs: a bar with the filters or steps done, the rate and the time left.

On by default where someone watches: a terminal (stderr is a TTY) or a Jupyter notebook (``tqdm.auto``
draws a widget there). Off in pipes, in CI (``$CI`` set) and whenever the caller says so (``--quiet``,
``progress=False``).

A bar counts work as the device finishes it, chunk by chunk; while it waits (for the compiler, or for
a long chunk), it says so with the seconds elapsed (:meth:`Progress.waiting`). Compiled programs never
call back to the host to report: JAX keeps no program with a host callback in its persistent compilation
cache, and the callbacks cost steps (BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (where tqdm.auto shows a widget)."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        return type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except AttributeError:
        return False


def _columns(stream: TextIO) -> int | None:
    """None where the stream's terminal reports its width (tqdm follows it), else 100 columns."""
    try:
        if os.get_terminal_size(stream.fileno()).columns > 0:
            return None
    except (AttributeError, OSError, ValueError):
        return None  # not a terminal (a notebook widget, a file): tqdm manages
    return 100


def wanted(requested: bool | None = None) -> bool:
    """``requested`` if given; else whether someone watches: a terminal or a notebook, and not CI."""
    if requested is not None:
        return bool(requested)
    if os.environ.get("CI"):
        return False
    return sys.stderr.isatty() or in_notebook()


def count_of(number: int, noun: str) -> str:
    """``"1 filter"``, ``"20 filters"``: a count with its noun in the right number."""
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


class Progress:
    """A tqdm bar of ``total`` ``unit``\\s when ``enabled``, nothing otherwise; thread-safe.

    Counts past ``total`` (padding rows of a last chunk) are dropped.
    """

    def __init__(
        self,
        total: int,
        unit: str,
        description: str = "",
        *,
        enabled: bool = True,
        file: TextIO | None = None,
    ):
        self._bar = None
        self._lock = threading.Lock()
        self.total, self.count = total, 0
        if enabled and total > 0:
            from tqdm.auto import tqdm

            stream = file or sys.stderr
            # A terminal that reports no size (a bare pseudo-terminal) would get a bar 0 columns wide and
            # 0 rows high, which tqdm hides: give it a size.
            width = _columns(stream)
            self._bar = tqdm(
                total=total,
                unit=unit,
                desc=description,
                dynamic_ncols=width is None,
                ncols=width,
                nrows=None if width is None else 24,
                file=stream,
                leave=True,
            )

    @property
    def enabled(self) -> bool:
        return self._bar is not None

    def update(self, units: int = 1) -> None:
        with self._lock:
            units = max(0, min(units, self.total - self.count))
            self.count += units
            if self._bar is not None and units:
                self._bar.update(units)

    def rate_from_now(self) -> None:
        """Count the rate, and so the time left, from now: a compile just before is no part of the work's
        pace (the elapsed time still counts it)."""
        if self._bar is not None:
            self._bar.last_print_t = self._bar._time()

    def describe(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_description(text, refresh=False)

    @contextlib.contextmanager
    def waiting(self, what: str, *, after: float = 0.5) -> Iterator[None]:
        """While the block runs (e.g. XLA compiling a program), once it has taken ``after`` seconds, the bar
        says ``what`` and the seconds so far, every half second; then it says what it said before."""
        bar = self._bar
        if bar is None:
            yield
            return
        finished, began, before = threading.Event(), time.monotonic(), bar.desc

        def tick() -> None:
            while not finished.wait(0.5):
                elapsed = time.monotonic() - began
                if elapsed >= after:
                    bar.set_description(f"{what} ({elapsed:.0f} s)", refresh=True)

        thread = threading.Thread(target=tick, name="filterviz-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            finished.set()
            thread.join()
            # `desc` already ends in ": ", which set_description would add again.
            bar.set_description_str(before, refresh=True)

    def note(self, text: str) -> None:
        """One line above the bar (nothing when the bar is off)."""
        if self._bar is not None:
            self._bar.write(text, file=self._bar.fp)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exception: Any) -> None:
        self.close()


_SHARED: contextvars.ContextVar[Progress | None] = contextvars.ContextVar(
    "filterviz_shared_bar", default=None
)


@contextlib.contextmanager
def shared(bar: Progress) -> Iterator[Progress]:
    """Inside the block, every render counts its steps into ``bar`` (a bar of steps) instead of showing
    a bar of its own: a job of many renders (an atlas's icons) shows one bar whose rate and time left
    come from the steps, updated as each render's segments end."""
    token = _SHARED.set(bar)
    try:
        yield bar
    finally:
        _SHARED.reset(token)


def shared_bar() -> Progress | None:
    """The bar renders count into now, if a job set one (:func:`shared`)."""
    return _SHARED.get()
