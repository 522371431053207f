"""The notebook runs end to end (in quick mode: small images, few steps), so it cannot rot; it runs as a new
user runs it, from its own folder in a clone whose weights/ holds the file, with no variable set."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from support import a_new_users_clone, as_a_new_user

NOTEBOOK = Path("notebooks") / "visualizing_conv_layers.ipynb"


@pytest.mark.slow
def test_notebook_runs_end_to_end(weights_path, tmp_path, monkeypatch):
    clone = a_new_users_clone(tmp_path, weights_path)
    new_user = as_a_new_user(clone)  # read before any variable is removed: the rest is kept
    for name in set(os.environ) - set(new_user):
        monkeypatch.delenv(name)
    for name, value in new_user.items():  # the kernel inherits this environment
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FILTERVIZ_QUICK", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel draws inline, as for a user
    notebook = nbformat.read(clone / NOTEBOOK, as_version=4)
    folder = {"metadata": {"path": str(clone / "notebooks")}}  # the kernel starts in the notebook's folder
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources=folder).execute()
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
    # The dream changes the photo: its filter fires on it.
    change = [re.search(r"mean change ([0-9.]+) of 255", output.get("text", "")) for output in outputs]
    assert next(float(found.group(1)) for found in change if found) > 0
