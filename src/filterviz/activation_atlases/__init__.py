"""Activation atlases: a layer's activation vectors over a photo folder (:mod:`~.vectors`), laid out in
2-D and averaged into grid cells (:mod:`~.cells`, pure), each cell drawn (:mod:`~.atlas`) on a zoomable
page (:mod:`~.page`)."""
