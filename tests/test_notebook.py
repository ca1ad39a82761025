"""The walkthrough notebook runs top to bottom on a headless kernel (tiny settings), so it never rots."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient
from test_sweep import sentences

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "temperature_sweep.ipynb"


def test_temperature_sweep_notebook_runs(tmp_path, monkeypatch):
    corpus = tmp_path / "sentences.txt"
    corpus.write_text(sentences(count=300), encoding="utf-8")
    # The kernel inherits the environment: shrink the notebook's settings to a few seconds.
    for name, value in {"CORPUS": str(corpus), "STEPS": "60", "HIDDEN": "32", "LENGTH": "200",
                        "OUT": str(tmp_path / "out")}.items():
        monkeypatch.setenv(f"CHARRNN_NOTEBOOK_{name}", value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for out in cell.get("outputs", []))
    assert "best validation loss" in outputs and "--- greedy:" in outputs
    assert "Spearman rho vs temperature" in outputs and "[pass] greedy decoding ends in a loop" in outputs
    images = [out for cell in notebook.cells for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    assert len(images) == 2
    assert (tmp_path / "out" / "sweep" / "report.html").is_file()
    assert not any(out.get("output_type") == "error" for cell in notebook.cells for out in cell.get("outputs", []))
