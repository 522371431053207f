"""Dataset examples: the photos (and crops) of a folder that excite each filter most, exact over the
folder, streamed through every device and resumable (:mod:`~filterviz.dataset_examples.examples`;
what it writes: :mod:`~filterviz.dataset_examples.results`)."""
