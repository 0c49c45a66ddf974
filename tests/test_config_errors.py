"""A wrong type anywhere in a job or fabric file is a field error (issue 21 §2): exit 2, the file
and the field's YAML path on stderr, never a traceback.

The documents are built from the real JSON Schemas (``JobSpec`` and ``Fabric``), walked together
with a valid example of each, so a field added to a model is mutated without touching this file
(a new *model* must be added to the examples: :func:`test_the_examples_reach_every_model` says so).
Every field (present or not), every list item and every mapping gets wrong types (null, numbers,
booleans, text, lists, mappings) and every model an unknown key.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import USER
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mailgem.connections.errors import MailgemError
from mailgem.fabric.loader import load_fabric, parse_fabric
from mailgem.fabric.model import Fabric
from mailgem.runner.cli import main
from mailgem.runner.job import JobSpec, load_job, parse_job

ROOT = Path(__file__).resolve().parents[1]

Path_ = tuple[str | int, ...]

# A job that uses every model of the job file (an optional sub-model left out would not be walked).
JOB: dict[str, Any] = {
    "name": "typed",
    "source": {"path": "data.csv", "format": "csv", "encoding": "utf-8", "options": {"sep": ","}},
    "transform": None,
    "params": {"region": "North"},
    "email": {
        "connection": "team-smtp",
        "to": "Ops <ops@example.com>, boss@example.com",
        "cc": ["cc@example.com"],
        "bcc": [],
        "reply_to": ["replies@example.com"],
        "subject": "{{ params.region }}: {{ row_count }} rows",
        "text_body": "{{ table_text }}{{ sections_text }}",
        "html_body": "{{ table }}{{ chart }}{{ sections }}",
        "priority": "high",
        "headers": {"X-Team": "sales"},
        "table": {"from": "in0", "enabled": True, "max_rows": 10, "max_html_bytes": 50_000, "max_cell_chars": 100,
                  "columns": ["city", {"name": "total", "label": "Sales", "format": ",.0f", "unit": "EUR", "align": "right"}],
                  "totals": {"total": "sum"}, "highlight": [{"column": "total", "when": "> 100", "style": "good"}],
                  "summary": {"group_by": ["city"], "aggregates": [{"column": "sales", "function": "sum", "name": "total"}],
                              "order_by": ["-total"]}},
        "formats": {"float_format": ",.1f", "int_format": ",", "date_format": "%Y-%m-%d",
                    "datetime_format": "%Y-%m-%d %H:%M", "na_rep": "-", "timezone": "UTC"},
        "attachments": [{"from": "in0", "file_name": "sales.csv", "format": "csv", "columns": ["city"], "delimiter": ";",
                         "header": True, "compression": "none", "compression_level": 6, "csv_formula_escape": True,
                         "bom": False, "protect": {"password": {"secret": "zip-password"}}},
                        {"file_name": "sales.xlsx", "format": "xlsx", "sheets": [
                            {"name": "Summary", "summary": {"group_by": ["city"], "aggregates": [{"column": "sales"}]}},
                            {"name": "Detail", "columns": ["city", {"name": "sales", "label": "Sales"}]}]}],
        "files": [{"path": "{{ params.region }}.pdf", "file_name": "r.pdf", "protect": {"password": {"secret": "zip-password"}}}],
        "sections": [{"title": "{{ section.row_count }} rows", "text": "By city", "from": "in0",
                      "table": {"columns": ["city"], "max_rows": 5}, "chart": {"kind": "bar", "x": "city", "y": "sales"}}],
        "chart": {"kind": "bar", "x": "city", "y": ["total"], "title": "Sales", "top_n": 5},
        "on_empty": "send",
        "on_error": "continue",
        "mode": "report",
        "group_by": [],
        "key_columns": ["city"],
        "to_column": "email",
        "max_messages": 10,
        "max_message_bytes": 1_000_000,
        "attachments_over_limit": "compress",
        "ledger": {"path": "ledger.sqlite", "run_key": "{{ run_date }}", "lease_s": 30},
        "distributed": False,
    },
}

# A job with two named sources (the gem's in0 and in1): walked for what only it has (sources, slice_by).
JOB_TWO: dict[str, Any] = {
    **{k: v for k, v in JOB.items() if k not in ("source", "transform")},
    "sources": {"recipients": {"path": "data.csv", "format": "csv", "encoding": "utf-8", "options": {"sep": ","},
                               "transform": "SELECT * FROM recipients"},
                "data": {"path": "data.csv", "transform": "SELECT city AS town, sales FROM data"}},
    "email": {**JOB["email"], "slice_by": {"city": "town"}},
}
JOBS = [JOB, JOB_TWO]

# The job's connection reaches nothing (a dry run and validate never connect); the others use
# every optional model a connection has, and the URL and preset forms.
FABRIC: dict[str, Any] = {
    "name": "typed",
    "teams": [{"name": "sales", "members": [USER]}],
    "secrets": {"type": "env", "prefix": "MAILGEM_SECRET_"},
    "connections": [
        {"name": "team-smtp", "host": "127.0.0.1", "port": 9, "security": "starttls", "min_tls_version": "1.2",
         "verify_certificates": True, "username": "reports@example.com", "password": {"secret": "pw"},
         "sender_name": "Sales Reports", "ehlo_hostname": "client.example.com", "pool_size": 1, "max_attempts": 1,
         "charset": "utf-8", "dsn": {"notify": ["failure"], "ret": "headers"}},
        {"name": "signed", "host": "smtp.example.com", "port": 587, "username": "reports@example.com",
         "auth": {"type": "oauth2", "provider": "google", "client_id": "id", "refresh_token": {"secret": "rt"}},
         "proxy": {"url": "socks5://proxy.example.com:1080", "password": {"secret": "proxy"}},
         "dkim": {"domain": "example.com", "selector": "s1", "private_key": {"secret": "dkim"}, "headers": ["from", "to"]},
         "allowed_special_domains": ["internal"], "ca_bundle": "ca.pem", "fallback": "team-smtp"},
        {"name": "by-url", "url": "smtps://reports%40example.com@smtp.example.com:465/?timeout_s=30",
         "password": {"secret": "pw"}},
        {"name": "by-preset", "preset": "ses", "region": "eu-west-1", "username": "AKIAEXAMPLE",
         "password": {"secret": "pw"}, "sender_address": "reports@example.com"},
    ],
}
# The other secret stores (a discriminated union: each variant is its own model).
FABRICS = [FABRIC] + [{**FABRIC, "secrets": store} for store in (
    {"type": "directory", "path": "secrets"},
    {"type": "encrypted_file", "path": "secrets.enc", "key_env": "MAILGEM_TEST_KEY"},
    {"type": "command", "argv": ["pass", "show", "{name}"], "name_env": "SECRET_NAME", "list_argv": ["pass", "ls"],
     "timeout_s": 5},
    {"type": "aws_secrets_manager", "region": "eu-west-1", "prefix": "mailgem/", "endpoint_url": "http://127.0.0.1:9"},
    # Remote stores at a closed local port: a valid document's secret lookup fails at once (exit 2).
    {"type": "vault", "address": "http://127.0.0.1:9", "path": "mailgem", "timeout_s": 2,
     "auth": {"method": "approle", "role_id_env": "R", "secret_id_file": "sid"}},
    {"type": "vault", "address": "http://127.0.0.1:9", "auth": {"method": "kubernetes", "role": "mailgem", "jwt_file": "jwt"}},
    {"type": "vault", "address": "http://127.0.0.1:9", "auth": {"method": "token", "token_env": "T"}},
    {"type": "gcp_secret_manager", "project": "p", "version": "2", "endpoint": "http://127.0.0.1:9", "anonymous": True,
     "timeout_s": 2},
    {"type": "databricks", "scope": "reports", "profile": "no-such-profile"},
    # Without Airflow installed (make test's environment), the store says which extra installs it (exit 2).
    {"type": "airflow", "source": "connection", "prefix": "mailgem_"},
)]

# Wrong values of every YAML type, and text that trips file and name lookups; a key no model has.
WRONG = [None, 42, -1, 1.5, True, "text", "", [], ["text", 42], [None], [[1]], {}, {"key": "value"}, {"key": [1]},
         "\x00", "~no-such-user/x", "x" * 300]
UNKNOWN_KEY = "no_such_field"


# -- walking a schema with a document ----------------------------------------------------------

def _resolve(schema: dict[str, Any], defs: dict[str, Any], seen: set[str]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rpartition("/")[2]
        seen.add(name)
        schema = defs[name]
    return schema


def _members(schema: dict[str, Any], value: Any, defs: dict[str, Any], seen: set[str]) -> list[dict[str, Any]]:
    """The non-null members of a union that ``value`` can be walked into (a discriminated union:
    the variant its tag names)."""
    options = schema.get("anyOf") or schema.get("oneOf")
    if options is None:
        return [schema]
    discriminator = schema.get("discriminator", {})
    if discriminator and isinstance(value, dict):
        ref = discriminator["mapping"].get(value.get(discriminator["propertyName"]))
        return [_resolve({"$ref": ref}, defs, seen)] if ref else []
    return [_resolve(o, defs, seen) for o in options if o.get("type") != "null"]


def slots(schema: dict[str, Any], doc: Any, defs: dict[str, Any], seen: set[str], path: Path_ = ()) -> Iterator[Path_]:
    """Every place a value can be put: each field of each model the document holds (present or
    not), each item of a list (the first of an empty one), a mapping's first value, and an
    unknown key in each model."""
    schema = _resolve(schema, defs, seen)
    for member in _members(schema, doc, defs, seen):
        member = _resolve(member, defs, seen)
        if "properties" in member and isinstance(doc, dict):
            for name, sub in member["properties"].items():
                yield (*path, name)
                if name in doc:
                    yield from slots(sub, doc[name], defs, seen, (*path, name))
            if member.get("additionalProperties") is False:
                yield (*path, UNKNOWN_KEY)
        elif member.get("type") == "array" and isinstance(doc, list):
            yield (*path, 0)
            for i, item in enumerate(doc):
                yield (*path, i)
                yield from slots(member.get("items", {}), item, defs, seen, (*path, i))
        elif isinstance(member.get("additionalProperties"), dict) and isinstance(doc, dict):
            key = next(iter(doc), "X-Key")
            yield (*path, key)
            if key in doc:
                yield from slots(member["additionalProperties"], doc[key], defs, seen, (*path, key))


def all_slots(model: type, doc: dict[str, Any]) -> tuple[list[Path_], set[str]]:
    schema = model.model_json_schema()
    seen: set[str] = set()
    found = list(dict.fromkeys(slots(schema, doc, schema.get("$defs", {}), seen)))
    return found, seen


def mutate(doc: dict[str, Any], path: Path_, value: Any) -> dict[str, Any]:
    """A copy of ``doc`` with ``value`` at ``path`` (a list's item 0 is added when it is empty)."""
    out = copy.deepcopy(doc)
    node = out
    for part in path[:-1]:
        node = node[part]
    last = path[-1]
    if isinstance(node, list) and not node:
        node.append(value)
    else:
        node[last] = value
    return out


def yaml_path(path: Path_) -> str:
    """``email.attachments[0].format``: the path as error messages write it."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


JOB_SLOTS = [(i, path) for i, job in enumerate(JOBS) for path in all_slots(JobSpec, job)[0]
             if i == 0 or path[0] == "sources" or path[:2] == ("email", "slice_by")]
JOB_MODELS = set().union(*(all_slots(JobSpec, job)[1] for job in JOBS))
# The store variants differ only in ``secrets``: the rest is walked once.
FABRIC_SLOTS = [(i, path) for i, fabric in enumerate(FABRICS) for path in all_slots(Fabric, fabric)[0]
                if i == 0 or path[0] == "secrets"]
FABRIC_MODELS = set().union(*(all_slots(Fabric, fabric)[1] for fabric in FABRICS))


# -- the files ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("typed")
    (folder / "data.csv").write_text("city,sales,email\nOslo,10,oslo@example.com\nBergen,5,bergen@example.com\n")
    (folder / "ca.pem").write_text("not read by these tests\n")
    (folder / "secrets").mkdir()
    return folder


class SparkStarted(Exception):
    """Raised instead of starting Spark: every check before Spark passed."""


SPARK_STARTS: list[tuple[Any, ...]] = []  # one entry each time a command got as far as starting Spark


@pytest.fixture
def no_spark(monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid document's dry run would start Spark: stop there (it got past every check)."""
    def local_spark(*args: Any, **kwargs: Any) -> Any:
        SPARK_STARTS.append(args)
        raise SparkStarted

    monkeypatch.setattr("mailgem.runner.spark.local_spark", local_spark)
    monkeypatch.setenv("MAILGEM_SECRET_PW", "not-a-real-password")
    monkeypatch.setenv("MAILGEM_SECRET_ZIP_PASSWORD", "not-a-real-zip-password")
    monkeypatch.delenv("MAILGEM_FABRIC", raising=False)


def _write(folder: Path, job: dict[str, Any], fabric: dict[str, Any]) -> tuple[Path, Path]:
    (folder / "job.yaml").write_text(yaml.safe_dump(job, allow_unicode=True, sort_keys=False))
    (folder / "fabric.yaml").write_text(yaml.safe_dump(fabric, allow_unicode=True, sort_keys=False))
    return folder / "job.yaml", folder / "fabric.yaml"


def _problem(load: Any, path: Path) -> str | None:
    """The loader's message when the file is invalid, ``None`` when it loads."""
    try:
        load(path)
    except MailgemError as exc:
        return str(exc)
    return None


def _commands(job: Path, fabric: Path) -> list[list[str]]:
    common = [str(job), "--fabric", str(fabric), "--user", USER]
    return [["validate", *common], ["run", *common, "--dry-run", "--out", str(job.parent / "dry-run")]]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | None, str]:
    """Exit code and stderr of ``main(argv)``; ``None`` when it got as far as starting Spark."""
    started = len(SPARK_STARTS)
    try:
        code: int | None = main(argv)
    except SparkStarted:
        code = None
    err = capsys.readouterr().err
    return (None if len(SPARK_STARTS) > started else code), err


def _named(message: str, file: Path, path: Path_) -> bool:
    """``message`` has a line ``file: yaml.path: ...`` naming ``path``, a field inside it (a
    mapping given for a model lacks its required fields), or, for a rule about several fields,
    a model holding it (``email.ledger: give ledger.path or ledger.url``)."""
    wanted = yaml_path(path)
    for line in message.splitlines():
        named = line.removeprefix("mailgem: ").removeprefix("error: ")
        if not named.startswith(f"{file}: "):
            continue
        named = named.removeprefix(f"{file}: ").partition(": ")[0]
        inside = named == wanted or named.startswith((wanted + ".", wanted + "["))
        holding = any(named == yaml_path(path[:n]) for n in range(1, len(path)))
        if inside or holding:
            return True
    return False


def _check_document(folder: Path, capsys: pytest.CaptureFixture[str], job: dict[str, Any], fabric: dict[str, Any],
                    mutated: tuple[str, Path_]) -> None:
    job_file, fabric_file = _write(folder, job, fabric)
    file, path = (job_file, mutated[1]) if mutated[0] == "job" else (fabric_file, mutated[1])
    problem = _problem(load_job if mutated[0] == "job" else load_fabric, file)
    doc = yaml.safe_dump(job if mutated[0] == "job" else fabric, sort_keys=False)
    for argv in _commands(job_file, fabric_file):
        code, err = _run(argv, capsys)
        crashed = "Traceback" in err or ("unexpected error" in err and code is not None)
        assert not crashed, f"{argv[0]} {yaml_path(path)}:\n{doc}\n{err}"
        if problem is None:
            assert code in (None, 0, 2), (argv[0], code, err)  # valid; other checks may still refuse it
            continue
        assert code == 2, f"{argv[0]} exit {code} for {yaml_path(path)}:\n{doc}\n{err}"
        assert _named(err, file, path), f"{argv[0]}: {yaml_path(path)} not named:\n{err}\n{doc}"


# -- the tests ---------------------------------------------------------------------------------

def test_the_examples_are_valid(folder, no_spark, capsys):
    for fabric in FABRICS:
        job_file, fabric_file = _write(folder, JOB, fabric)
        load_job(job_file)
        load_fabric(fabric_file)
    for job in JOBS:
        job_file, fabric_file = _write(folder, job, FABRIC)
        validate, dry_run = _commands(job_file, fabric_file)
        code, err = _run(validate, capsys)
        assert code == 0, f"the example job must pass validate:\n{err}"
        code, err = _run(dry_run, capsys)
        assert code is None, f"the example job's dry run must get as far as Spark:\n{err}"


def test_the_examples_reach_every_model():
    job_defs = set(JobSpec.model_json_schema()["$defs"])
    fabric_defs = set(Fabric.model_json_schema()["$defs"])
    assert job_defs - JOB_MODELS == set(), "add these models to JOB, so their fields are mutated"
    assert fabric_defs - FABRIC_MODELS == set(), "add these models to FABRIC, so their fields are mutated"
    assert len(JOB_SLOTS) > 80 and len(FABRIC_SLOTS) > 150, (len(JOB_SLOTS), len(FABRIC_SLOTS))


@pytest.mark.parametrize("kind", ["job", "fabric"])
def test_every_wrong_value_in_every_field_is_named(folder, kind):
    """Every slot and every wrong value, validated as the loaders do after reading the YAML
    (the CLI test below samples the same documents end to end)."""
    slots_ = JOB_SLOTS if kind == "job" else FABRIC_SLOTS
    base = JOBS if kind == "job" else FABRICS
    parse = parse_job if kind == "job" else parse_fabric
    file = folder / f"{kind}.yaml"
    failures = []
    for i, path in slots_:
        for value in WRONG:
            try:
                parse(mutate(base[i], path, value), file)
            except MailgemError as exc:
                if not _named(str(exc), file, path):
                    failures.append(f"{yaml_path(path)} = {value!r}: not named in {str(exc)!r}")
            except Exception as exc:  # noqa: BLE001 - a crash is what this test looks for
                failures.append(f"{yaml_path(path)} = {value!r}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures)


WRONG_VALUES = st.sampled_from(WRONG)


@st.composite
def documents(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], tuple[str, Path_]]:
    """A job and a fabric with one field of one of them given a wrong value."""
    fabric_index = draw(st.integers(0, len(FABRICS) - 1))
    job, fabric = JOB, FABRICS[fabric_index]
    if draw(st.booleans()):
        job_index, path = draw(st.sampled_from(JOB_SLOTS))
        return mutate(JOBS[job_index], path, draw(WRONG_VALUES)), fabric, ("job", path)
    path = draw(st.sampled_from([p for i, p in FABRIC_SLOTS if i == fabric_index]))
    value = draw(WRONG_VALUES)
    return job, mutate(fabric, path, value), ("fabric", path)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=documents())
def test_wrong_types_are_field_errors_through_the_cli(folder, no_spark, capsys, case):
    job, fabric, mutated = case
    _check_document(folder, capsys, job, fabric, mutated)


def test_to_42_is_a_field_error_in_a_subprocess(tmp_path):
    (tmp_path / "data.csv").write_text("city\nOslo\n")
    (tmp_path / "job.yaml").write_text("name: t\nsource: {path: data.csv}\nemail:\n  connection: local\n  to: 42\n"
                                       "  subject: hi\n")
    done = subprocess.run([sys.executable, "-m", "mailgem.runner.cli", "validate", "job.yaml", "--local"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 2, done.stderr
    assert "job.yaml: email.to: " in done.stderr and "Traceback" not in done.stderr, done.stderr


def _message(folder: Path, model: Any, doc: dict[str, Any]) -> str:
    """What the loader says of ``doc`` (as ``f.yaml`` in ``folder``; ``model``: a pydantic model
    validated directly, or ``parse_job`` / ``parse_fabric``)."""
    from pydantic import ValidationError

    from mailgem.connections.model import format_validation_error

    if model in (parse_job, parse_fabric):
        with pytest.raises(MailgemError) as caught:
            model(copy.deepcopy(doc), folder / "f.yaml")
        return str(caught.value).replace(f"{folder}/", "")
    with pytest.raises(ValidationError) as raised:
        model.model_validate(doc)
    return format_validation_error(raised.value, "f.yaml", doc)


def test_paths_are_yaml_paths_without_union_members(folder):
    # pydantic's own locations: email.chart.y.str, email.chart.y.list[str], secrets.directory.path
    chart = mutate(JOB, ("email", "chart", "y"), {"key": 1})
    assert _message(folder, parse_job, chart) == \
        "f.yaml: email.chart.y: Input should be a valid string, or Input should be a valid list"
    store = mutate(FABRIC, ("secrets",), {"type": "directory"})
    assert _message(folder, parse_fabric, store) == "f.yaml: secrets.path: Field required"
    store = mutate(FABRIC, ("secrets",), {"type": "encrypted_file", "path": "s.enc", "key_env": "K", "key_file": "k"})
    assert _message(folder, parse_fabric, store).startswith("f.yaml: secrets: give key_env")


def test_every_error_has_a_path(folder):
    twice = mutate(FABRIC, ("connections", 1), FABRIC["connections"][0])
    assert _message(folder, parse_fabric, twice) == \
        "f.yaml: connections: connection names must be unique; repeated: team-smtp"
    from pydantic import BaseModel, model_validator

    class Whole(BaseModel):
        @model_validator(mode="after")
        def _refuse(self) -> Whole:
            raise ValueError("no")

    assert _message(folder, Whole, {}) == "f.yaml: (top level): no"


def test_a_validator_filled_field_is_named(folder):
    # url: the port comes from the URL, so it is no key of the file, but it is what is wrong.
    by_url = mutate(FABRIC, ("connections", 2, "url"), "smtps://reports%40example.com@smtp.example.com:465/?pool_size=0")
    assert _message(folder, parse_fabric, by_url) == \
        "f.yaml: connections[2].pool_size: Input should be greater than or equal to 1"
    by_preset = mutate(FABRIC, ("connections", 3, "region"), ["eu-west-1"])
    assert _message(folder, parse_fabric, by_preset) == \
        "f.yaml: connections[3]: region: must be an AWS region, e.g. eu-west-1, not a list"
