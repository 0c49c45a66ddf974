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
    outputs = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                      for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []))
    assert "sent" in outputs and "250" in outputs and "did you mean 'row_count'" in outputs
    assert "log4j" not in outputs and "WARN" not in outputs  # Spark's chatter went to spark.log
    messages = [parse(p.read_bytes()) for p in sorted((tmp_path / "outbox").glob("*.eml"))]
    [daily] = [m for m in messages if m["Subject"].startswith("Delays 2013-07-22: ")]
    assert daily["From"].addresses[0].addr_spec == "mailgem-dev@example.com"
    assert [p.get_filename() for p in daily.iter_attachments()] == ["delayed-2013-07-22.csv.gz"]
    # Dates come from the data's day, not the day the notebook runs.
    assert "Departure delays on 2013-07-22" in daily.get_body(("plain",)).get_content()
    per_carrier = [m for m in messages if not m["Subject"].startswith("Delays")]
    assert per_carrier and all(m["Subject"].endswith("on 2013-07-22") for m in per_carrier)
    assert all(str(m["To"]).endswith("-ops@example.com") for m in per_carrier)


def test_notebook_is_saved_as_a_worked_example():
    """Saved executed, as a user would copy it: every code cell has run without error, a preview
    shows inline as HTML, the report is a DataFrame, and the server is a context manager."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for c in code for o in c.outputs if "text/html" in o.get("data", {})]
    assert any("<iframe" in h and "Delays 2013-07-22" in h for h in html)  # the preview
    assert any("<table" in h and "message_key" in h for h in html)  # the delivery report
    source = "\n".join(c.source for c in code)
    assert "__enter__" not in source and "__exit__" not in source and "enter_context(local_fabric(" in source
    assert "load_fabric(" in source and ".validate(" in source and ".preview(" in source
    assert ".apply(spark, delayed)" in source and ".apply(delayed_pd" in source
    text = "".join(o.get("text", "") for c in code for o in c.outputs)
    assert "log4j" not in text and "WARN" not in text
