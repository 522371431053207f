"""Files at the edge: :mod:`~filterviz.io.photos` (photos in), :mod:`~filterviz.io.files` (pictures,
GIFs and arrays out, atomically, marked as filterviz's) and :mod:`~filterviz.io.plots` (figures)."""
