"""Keyword names that changed, kept working for one release with a :class:`DeprecationWarning` naming
the new one (the vocabulary: ``docs/vocabulary.md``)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from filterviz.errors import SettingError

F = TypeVar("F", bound=Callable[..., Any])


def renamed(**old_to_new: str) -> Callable[[F], F]:
    """Decorate a function whose keyword ``old`` is now called ``new``: the old name still works, warns
    once per call site, and is refused beside the new one.

    >>> @renamed(folder="out")
    ... def job(*, out: str) -> str:
    ...     return out
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     job(folder="here"), str(caught[0].message)
    ('here', "job(folder=...) is now job(out=...); 'folder' will be removed in the next release")
    """

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in old_to_new.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise SettingError(f"{function.__name__}() got both {old}= and {new}=; give {new}= alone")
                warnings.warn(
                    f"{function.__name__}({old}=...) is now {function.__name__}({new}=...); "
                    f"{old!r} will be removed in the next release",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        wrapper.__renamed__ = dict(old_to_new)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
