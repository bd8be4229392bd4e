"""docs/tour.ipynb runs top to bottom offline, as a person would run it, and shows a picture for every method."""

from __future__ import annotations

import os

import pytest
from conftest import OFFLINE, ROOT

nbformat = pytest.importorskip("nbformat", reason="install requirements-dev.txt (nbclient, nbformat, ipykernel)")
nbclient = pytest.importorskip("nbclient")


@pytest.mark.slow
def test_the_tour_runs_offline_and_shows_every_method(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(OFFLINE), str(ROOT)]))  # the kernel cannot open sockets
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(ROOT / "docs" / "tour.ipynb", as_version=4)
    for cell in nb.cells:  # run from the source, not from the outputs saved with it
        if cell.cell_type == "code":
            cell.outputs = []
    client = nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    shown = " ".join(
        o["data"]["text/plain"]
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.outputs
        if o.get("output_type") == "execute_result" and "image/png" in o.get("data", {})
    )
    for method in ("filters", "feature_maps", "guided_backprop", "grad_cam", "guided_grad_cam", "overview"):
        assert f"· {method} ·" in shown, f"the tour shows no {method} picture"
    assert "<Artefact mine ·" in shown  # a user's own module
    assert not any(o.get("output_type") == "error" for cell in nb.cells for o in cell.get("outputs", []))
