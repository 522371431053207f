"""Drawing as users call it: :mod:`~filterviz.draw.rendering` (:func:`render`, any method, chunked by
device memory, with progress) and :mod:`~filterviz.draw.notebook` (the notebook's names for it)."""
