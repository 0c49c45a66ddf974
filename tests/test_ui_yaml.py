"""mailgem.ui.yamlfile: a YAML file edited in place (comments, order, quoting kept), conflicts
refused, atomic writes."""

from __future__ import annotations

import ast
import difflib
import os
import stat
from pathlib import Path

import pytest
from ruamel.yaml.scalarstring import LiteralScalarString

from mailgem.ui.yamlfile import (
    ConflictError,
    YamlFile,
    YamlSyntaxError,
    delete_path,
    get_path,
    parse_path,
    set_path,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _test_fabric_text() -> str:
    """The FABRIC fixture text of tests/test_fabric.py (read, not imported: importing a test
    module would collect its tests twice)."""
    tree = ast.parse((ROOT / "tests" / "test_fabric.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "FABRIC":
            return str(ast.literal_eval(node.value))
    raise AssertionError("tests/test_fabric.py has no FABRIC")


def _changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


@pytest.mark.parametrize("name", ["fabric.yaml", "flights_delay_report.yaml", "flights_per_carrier.yaml"])
def test_unchanged_example_round_trips_byte_for_byte(name):
    file = YamlFile.load(EXAMPLES / name)
    assert file.dump(file.doc) == (EXAMPLES / name).read_text()


def test_test_fabric_fixture_round_trips(tmp_path):
    text = _test_fabric_text()
    assert text.startswith("\n")  # a leading blank line, which ruamel alone drops
    path = tmp_path / "fabric.yaml"
    path.write_text(text)
    file = YamlFile.load(path)
    assert file.dump(file.doc) == text


def test_set_nested_value_keeps_comments_order_and_quotes():
    file = YamlFile.load(EXAMPLES / "flights_delay_report.yaml")
    assert set_path(file.doc, "email.table.columns[1].label", "Delayed")
    assert set_path(file.doc, "email.subject", "New {{ row_count }}")
    out = file.dump(file.doc)
    assert _changed_lines(file.text, out) == [
        ('-  subject: "Delays {{ params.report_date }}: {{ \'{:,}\'.format(row_count) }} departures '
         '{{ params.min_delay_min }}+ min late"'),
        '+  subject: "New {{ row_count }}"',
        '-      - {name: delayed_flights, label: Delayed departures, format: ","}',
        '+      - {name: delayed_flights, label: Delayed, format: ","}',
    ]
    assert "    # What readers see: labels and units instead of column names" in out
    assert list(YamlFile.load(EXAMPLES / "flights_delay_report.yaml").doc["email"]) == list(file.doc["email"])


def test_unchanged_value_is_not_rewritten():
    file = YamlFile.load(EXAMPLES / "fabric.yaml")
    assert not set_path(file.doc, "connections[0].username", "${REPORTS_MAILBOX:-reports@example.com}")
    assert not set_path(file.doc, "connections[0].max_per_day", 2000)
    assert set_path(file.doc, "connections[2].anonymous", 1)  # 1 is no boolean in YAML
    assert file.dump(file.doc).count('"${REPORTS_MAILBOX:-reports@example.com}"') == 1


def test_env_references_stay_strings_and_round_trip(tmp_path):
    path = tmp_path / "fabric.yaml"
    path.write_text(_test_fabric_text())
    file = YamlFile.load(path)
    assert get_path(file.doc, "connections[0].port") == "${SMTP_PORT}"
    assert get_path(file.doc, "connections[0].sender_name") == "${SENDER_NAME:-Analytics Reports}"
    set_path(file.doc, "connections[0].host", "smtp.example.com")
    out = file.dump(file.doc)
    assert "    port: ${SMTP_PORT}\n" in out
    assert "    sender_name: ${SENDER_NAME:-Analytics Reports}\n" in out
    assert _changed_lines(file.text, out) == ["-    host: 127.0.0.1", "+    host: smtp.example.com"]


def test_new_multiline_string_is_a_literal_block_and_a_block_stays_one():
    file = YamlFile.load(EXAMPLES / "flights_delay_report.yaml")
    set_path(file.doc, "email.ledger.path", "ledger.db")  # intermediate mapping created
    set_path(file.doc, "email.footer_note", "line one\nline two\n")
    set_path(file.doc, "transform", "SELECT *\nFROM source\n")
    assert isinstance(file.doc["email"]["footer_note"], LiteralScalarString)
    out = file.dump(file.doc)
    assert "  ledger:\n    path: ledger.db\n" in out
    assert "  footer_note: |\n    line one\n    line two\n" in out
    assert "transform: |\n  SELECT *\n  FROM source\nemail:" in out


def test_append_at_end_of_list_and_delete():
    file = YamlFile.load(EXAMPLES / "fabric.yaml")
    set_path(file.doc, "connections[3].name", "new-one")
    assert get_path(file.doc, "connections[3]") == {"name": "new-one"}
    with pytest.raises(ValueError, match="no such list item"):
        set_path(file.doc, "connections[9].name", "x")
    assert delete_path(file.doc, "connections[0].rate_per_s")
    assert not delete_path(file.doc, "connections[0].rate_per_s")
    assert not delete_path(file.doc, "nowhere.at.all")
    assert "rate_per_s" not in file.dump(file.doc)
    assert get_path(file.doc, "connections[0].rate_per_s", None) is None
    with pytest.raises(KeyError):
        get_path(file.doc, "connections[0].rate_per_s")


@pytest.mark.parametrize("bad", ["", "a..b", "a[x]", "a[0", ".a", "a.", "a b"])
def test_bad_paths_are_refused(bad):
    with pytest.raises(ValueError):
        parse_path(bad)


def test_parse_path():
    assert parse_path("email.table.columns[1].label") == ("email", "table", "columns", 1, "label")
    assert parse_path("a[0][2]") == ("a", 0, 2)


def test_conflict_raises_with_diff_and_writes_nothing(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text((EXAMPLES / "flights_delay_report.yaml").read_text())
    file = YamlFile.load(path)
    page_digest = file.digest
    set_path(file.doc, "email.subject", "mine")
    someone_else = file.text.replace("on_error: stop", "on_error: continue")
    path.write_text(someone_else)
    with pytest.raises(ConflictError) as caught:
        file.save(file.doc, page_digest)
    assert path.read_text() == someone_else
    assert caught.value.diff.startswith("--- loaded\n+++ on disk\n")
    assert "-  on_error: stop\n+  on_error: continue\n" in caught.value.diff


def test_save_is_atomic_and_keeps_mode(tmp_path):
    path = tmp_path / "fabric.yaml"
    path.write_text((EXAMPLES / "fabric.yaml").read_text())
    os.chmod(path, 0o640)
    inode = path.stat().st_ino
    file = YamlFile.load(path)
    set_path(file.doc, "connections[1].sender_address", "ops@example.com")
    digest = file.save(file.doc, file.digest)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_ino != inode  # replaced, not rewritten in place
    assert "    sender_address: ops@example.com\n" in path.read_text()
    assert digest == YamlFile.load(path).digest == file.digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fabric.yaml"]  # no temporary file left
    file.save(file.doc, digest)  # the saved digest is the one to send next time


def test_bad_yaml_names_line_and_column():
    file = YamlFile.load(EXAMPLES / "fabric.yaml")
    with pytest.raises(YamlSyntaxError) as caught:
        file.parse("name: x\nteams:\n  - name: a\n   bad: [\n")
    assert caught.value.line is not None and caught.value.line >= 4
    assert "line" in str(caught.value) and "Traceback" not in str(caught.value)
    with pytest.raises(YamlSyntaxError, match="line 2, column 5: mapping values are not allowed"):
        file.parse("a: 1\nb: c: d\n")
    with pytest.raises(YamlSyntaxError, match="must be a mapping"):
        file.parse("- a\n- b\n")
    with pytest.raises(YamlSyntaxError, match="duplicate key"):
        file.parse("a: 1\na: 2\n")
    assert file.parse("a: 1  # kept\n")["a"] == 1
