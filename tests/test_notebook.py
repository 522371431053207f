"""The notebook runs end to end (in quick mode: small images, few steps), so it cannot rot."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "visualizing_conv_layers.ipynb"


@pytest.mark.slow
def test_notebook_runs_end_to_end(weights_path, monkeypatch):
    monkeypatch.setenv("FILTERVIZ_QUICK", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel draws inline, as for a user
    monkeypatch.setenv("FILTERVIZ_WEIGHTS", str(weights_path))
    source = Path(__file__).resolve().parents[1] / "src"
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))
    )
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    # The noise, one filter, a grid per conv layer (4 of the 13 in the quick check), the dream, notebook
    # vs Lucid, the facets, the dataset examples, the filters of the reader's own trained network.
    assert len(images) >= 11
    assert any("accuracy on new images" in output.get("text", "") for output in outputs)
    assert any("{'conv1': 8, 'conv2': 16}" in output.get("text", "") for output in outputs)
    assert any("frames recorded: (2, 1, 3," in output.get("text", "") for output in outputs)
    assert any("Total params: 14,714,688" in output.get("text", "") for output in outputs)
