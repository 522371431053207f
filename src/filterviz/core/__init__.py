"""The pure numerical core: arrays in, arrays out, no files, no network lookups by name.

:mod:`~filterviz.core.network` (the network type and input conventions), :mod:`~filterviz.core.objectives`,
:mod:`~filterviz.core.parameterizations`, :mod:`~filterviz.core.transforms`, :mod:`~filterviz.core.methods`,
:mod:`~filterviz.core.engine` (the one ``fori_loop``, vmapped), :mod:`~filterviz.core.checks` (settings
and the memory model), :mod:`~filterviz.core.pictures` and :mod:`~filterviz.core.hits` (top-k).
"""
