"""Sweeps: every filter of many layers into a folder (:mod:`~filterviz.sweeps.sweep`, its compute in
:mod:`~filterviz.sweeps.filter_chunks`), the manifest, the folder's layout and ownership, and the page
that shows it (:mod:`~filterviz.sweeps.atlas`)."""
