"""The look-inside notebook runs top to bottom on a headless kernel (tiny settings), so it never rots."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient
from test_explain import play

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "look_inside.ipynb"


def test_look_inside_notebook_runs(tmp_path, monkeypatch):
    corpus = tmp_path / "play.txt"
    corpus.write_text(play(count=200), encoding="utf-8")
    for name, value in {"CORPUS": str(corpus), "STEPS": "60", "HIDDEN": "24", "SHOWN": "3000",
                        "OUT": str(tmp_path / "out")}.items():
        monkeypatch.setenv(f"CHARRNN_NOTEBOOK_{name}", value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for out in cell.get("outputs", []))
    assert "best validation loss" in outputs and "gates {'i':" in outputs
    assert "capitals line" in outputs and "control" in outputs and "the n-gram gains most on" in outputs
    images = [out for cell in notebook.cells for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    assert len(images) == 2
    assert (tmp_path / "out" / "explain" / "explain.html").is_file()
    assert not any(out.get("output_type") == "error" for cell in notebook.cells for out in cell.get("outputs", []))
