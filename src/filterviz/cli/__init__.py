"""The command line: :mod:`filterviz.cli.parser` (one sub-parser builder per command),
:mod:`filterviz.cli.commands` (what each command does) and :func:`main`."""

from filterviz.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
