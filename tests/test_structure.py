"""The structure a reader can check: five packages, each importing only those below it
(``ui → runner → gems → fabric → connections``), the scheduler integrations above the runner that
nothing imports (``mailgem.airflow`` and ``mailgem.dagster``, in ``integrations/``), and the front door
``from mailgem import ...``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Each package and the packages it may import (besides itself).
BELOW = {
    "connections": set(),
    "fabric": {"connections"},
    "gems": {"fabric", "connections"},
    "runner": {"gems", "fabric", "connections"},
    "ui": {"runner", "gems", "fabric", "connections"},  # the browser dialogs sit above the runner
    # The schedulers' faces (mailgem.airflow, mailgem.dagster) sit above the runner; nothing imports them.
    "airflow": {"runner", "gems", "fabric", "connections"},
    "dagster": {"runner", "gems", "fabric", "connections"},
}
# Packages whose folder is not the top-level folder of their name (mailgem.X lives in FOLDER[X]):
# a top-level airflow/ or dagster/ would shadow the real package when run from the checkout.
FOLDER = {"airflow": "integrations/airflow", "dagster": "integrations/dagster"}


def _folder(package: str) -> Path:
    return ROOT / FOLDER.get(package, package)


def _imports(path: Path, package: str) -> set[str]:
    """The mailgem packages a module imports (absolute ``mailgem.X`` and relative imports alike)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    depth = len(path.relative_to(_folder(package)).parts)  # 1 for a module at the package's top
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names = [node.module or ""]
            elif node.level >= depth + 1:  # climbs above the package: `from ...x import y`
                names = ["mailgem." + (node.module or "")]
            else:
                continue
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "mailgem" and len(parts) > 1:
                found.add(parts[1])
    return found - {package}


@pytest.mark.parametrize("package", sorted(BELOW))
def test_each_package_imports_only_those_below_it(package):
    modules = sorted(p for p in _folder(package).rglob("*.py") if "__pycache__" not in p.parts)
    assert len(modules) >= 2, modules
    wrong = {str(p.relative_to(ROOT)): sorted(bad) for p in modules if (bad := _imports(p, package) - BELOW[package])}
    assert not wrong, f"{package}/ may import only {sorted(BELOW[package])}: {wrong}"


def test_the_checker_sees_a_wrong_import(tmp_path):
    # The rule above can fail: a gem module importing the runner is found, relative or absolute.
    gems = tmp_path / "gems" / "email"
    gems.mkdir(parents=True)
    (gems / "bad.py").write_text("from ...runner.job import load_job\nimport mailgem.runner.cli\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert _imports(gems / "bad.py", "gems") == {"runner"}
        # An integration in its folder: an import of the browser dialogs is found there too.
        (tmp_path / "integrations" / "airflow").mkdir(parents=True)
        (tmp_path / "integrations" / "airflow" / "bad.py").write_text("from ..ui import app\nimport mailgem.runner\n")
        assert _imports(tmp_path / "integrations" / "airflow" / "bad.py", "airflow") - BELOW["airflow"] == {"ui"}
    finally:
        ROOT = saved


def test_the_checker_sees_an_import_of_an_integration(tmp_path):
    # An integration's own modules may import each other; a package below importing one is found.
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        for folder, text in (("integrations/dagster", "from .outcome import x\nfrom mailgem.dagster import y\n"),
                             ("runner", "from mailgem.dagster import MailgemResource\n")):
            (tmp_path / folder).mkdir(parents=True)
            (tmp_path / folder / "m.py").write_text(text)
        assert _imports(tmp_path / "integrations/dagster/m.py", "dagster") == set()
        assert _imports(tmp_path / "runner/m.py", "runner") - BELOW["runner"] == {"dagster"}
    finally:
        ROOT = saved


# What a reader can hold at once: a module of at most ~400 lines, a function of at most ~80.
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def test_modules_and_functions_stay_small():
    too_long: list[str] = []
    for package in BELOW:
        for path in sorted(_folder(package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            text = path.read_text(encoding="utf-8")
            where = path.relative_to(ROOT)
            if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
                too_long.append(f"{where}: {lines} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        too_long.append(f"{where}:{node.lineno} {node.name}(): {length} lines")
    assert not too_long, too_long


def test_the_connection_layer_knows_nothing_of_ledgers_or_leases():
    # The run's rules reach connections/ only through its Gate protocol (connections/gate.py).
    import re

    word = re.compile(r"\b(ledgers?|leases?|leased|leasing)\b", re.IGNORECASE)
    named = {f"{p.name}:{n}": line.strip() for p in sorted((ROOT / "connections").rglob("*.py"))
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if word.search(line)}
    assert not named, named


def test_the_connection_package_offers_what_users_use_not_plumbing():
    import mailgem.connections as connections

    offered = set(connections.__all__)
    assert {"SmtpConnection", "SmtpTransport", "SecretRef", "Deliverer", "AuthenticationError"} <= offered
    assert not offered & {"run_sync", "prefolded", "PrefoldedHeader", "SmtpSession", "SmtpPool", "RateLimiter",
                          "limiter_for", "Where", "redact"}, offered
    for name in offered:
        assert getattr(connections, name) is not None, name


def test_the_front_door_holds_what_users_need():
    import mailgem

    for name in mailgem.__all__:
        assert getattr(mailgem, name) is not None, name
    from mailgem import DeliveryStatus, EmailGem, SmtpConnection, load_fabric

    assert EmailGem.__module__ == "mailgem.gems.email.gem" and callable(load_fabric)
    assert SmtpConnection.__name__ == "SmtpConnection" and DeliveryStatus.SENT == "sent"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        mailgem.Nope  # noqa: B018
