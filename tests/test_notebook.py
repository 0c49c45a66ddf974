"""The worked notebook runs top to bottom in a real Jupyter kernel (which has a running event loop)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
from conftest import parse
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "email_report.ipynb"


def test_notebook_sends_the_report(tmp_path):
    shutil.copy(NOTEBOOK, tmp_path)
    nb = nbformat.read(tmp_path / NOTEBOOK.name, as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []))
    assert "sent" in outputs and "250" in outputs
    [eml] = list((tmp_path / "outbox").glob("*.eml"))
    msg = parse(eml.read_bytes())
    assert msg["Subject"].startswith("Delays 2013-07-22: ") and msg["From"].addresses[0].addr_spec == "mailgem-dev@example.com"
    assert [p.get_filename() for p in msg.iter_attachments()] == ["delayed-2013-07-22.csv.gz"]
