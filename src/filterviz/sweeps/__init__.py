"""Work at volume, into a folder: :mod:`~filterviz.sweeps.sweep` (every filter of many layers),
:mod:`~filterviz.sweeps.examples` (dataset examples), :mod:`~filterviz.sweeps.atlas` (the page), over
:mod:`~filterviz.sweeps.sharding` and :mod:`~filterviz.sweeps.multihost` (devices and hosts), with
:mod:`~filterviz.sweeps.folder` saying what a folder may hold."""
