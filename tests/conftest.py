"""Fixtures: real aiosmtpd servers on loopback (STARTTLS + AUTH, implicit TLS, plain), fabrics
that reach them, and one session-wide local SparkSession."""

from __future__ import annotations

import email
import email.errors
import email.policy
import itertools
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
from pydantic import SecretStr

from mailgem.connections import SmtpConnection
from mailgem.fabric import Fabric, MemorySecretStore, Team

import jvm_start
import pg_server
from fault_server import FaultServer

os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable

USER = "alice"
LOGIN = "reports@example.com"
# A test-only credential for the in-process server; tests assert it never leaks.
PASSWORD = "Tr0ub4dor-test-only-9f3e"


def pytest_configure(config: pytest.Config) -> None:
    jvm_start.begin()  # faster JVM start-ups for the session's Spark runs (see tests/jvm_start.py)


def pytest_runtest_setup(item: pytest.Item) -> None:
    jvm_start.poll()


def pytest_unconfigure(config: pytest.Config) -> None:
    jvm_start.end()


@pytest.fixture(scope="session")
def spark():
    from mailgem.runner.spark import local_spark

    session = local_spark("local[2]", app_name="mailgem-tests")
    yield session
    session.stop()


def _server(**kwargs) -> Iterator[FaultServer]:
    server = FaultServer(**kwargs)
    with server:
        yield server


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test module with ``PIPELINING_MODES = (True, False)`` runs its tests that use ``starttls_server``
    against a server with and without PIPELINING (RFC 2920): both transaction paths."""
    modes = getattr(metafunc.module, "PIPELINING_MODES", None)
    if modes and "pipelining" in metafunc.fixturenames:
        metafunc.parametrize("pipelining", modes, ids=["pipelined" if m else "unpipelined" for m in modes])


@pytest.fixture
def pipelining() -> bool:
    """Whether the test servers offer PIPELINING (default: yes, as Postfix does)."""
    return True


@pytest.fixture
def starttls_server(pipelining: bool) -> Iterator[FaultServer]:
    """STARTTLS required, AUTH PLAIN/LOGIN only after TLS."""
    yield from _server(security="starttls", users={LOGIN: PASSWORD}, pipelining=pipelining)


@pytest.fixture
def implicit_tls_server() -> Iterator[FaultServer]:
    yield from _server(security="implicit_tls", users={LOGIN: PASSWORD})


@pytest.fixture
def plain_server() -> Iterator[FaultServer]:
    """No TLS; offers AUTH over plaintext so tests can prove the client refuses to use it."""
    yield from _server(security="none", users={LOGIN: PASSWORD}, auth_over_plaintext=True)


@pytest.fixture
def relay_server() -> Iterator[FaultServer]:
    """No TLS, no AUTH: an internal relay."""
    yield from _server(security="none")


# One email per row to the address in column "to", failures recorded (tests of runs and reruns).
PER_ROW = {"connection": "reports", "mode": "per_row", "key_columns": ["n"], "to_column": "to",
           "subject": "Message {{ row.n }}", "text_body": "Hello {{ row.n }}", "on_error": "continue"}


def connection_for(server: FaultServer, name: str = "reports", **overrides) -> SmtpConnection:
    fields = dict(name=name, host=server.host, port=server.port, security=server.security,
                  ca_bundle=server.ca_pem, username=LOGIN, password={"secret": "smtp-password"},
                  sender_name="Reports", timeout_s=10)
    if server.security == "none":
        fields.pop("ca_bundle")
    fields.update(overrides)
    return SmtpConnection(**fields)


def fabric_for(server: FaultServer, password: str = PASSWORD, **overrides) -> Fabric:
    fab = Fabric(name="analytics", teams=[Team(name="data-eng", members=[USER, "bob"])],
                 connections=[connection_for(server, **overrides)])
    return fab.with_store(MemorySecretStore({"smtp-password": SecretStr(password),
                                             "ledger-password": SecretStr(pg_server.PASSWORD)}))


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg_server.PostgresServer]:
    """A private PostgreSQL server for the whole run; the tests that need it are skipped, with the
    reason, only when it cannot be started (.ci/run installs Debian's postgresql)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'mailgem[postgres]')")
    server = pg_server.PostgresServer()
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        server.stop()
        pytest.skip(f"PostgreSQL could not be started: {exc}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_place(request, tmp_path) -> dict[str, str]:
    """Where a test's ledger lives, as ``ledger:`` options: a SQLite file, or a new database on
    the test PostgreSQL server with its password in the fabric secret ``ledger-password``."""
    if request.param == "sqlite":
        return {"path": str(tmp_path / "ledger.sqlite")}
    server = request.getfixturevalue("postgres")
    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + f"_{next(_DATABASES)}"
    return {"url": server.create_database(name), "secret": "ledger-password"}


_DATABASES = itertools.count()


def parse(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


@pytest.fixture
def smtputf8_server() -> Iterator[FaultServer]:
    """STARTTLS + AUTH, offering SMTPUTF8 (RFC 6531) as Postfix does."""
    yield from _server(security="starttls", users={LOGIN: PASSWORD}, smtputf8=True)


def parse_strict(data: bytes) -> EmailMessage:
    """Parse what a server received and fail on any defect the stdlib finds, in the message, any
    part or any header. Messages with UTF-8 headers (RFC 6532) are parsed as text; in those, a
    non-ASCII local part is allowed (the stdlib's parser knows only RFC 5322 and flags it)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    # RFC 5322 §2.2, §3.2.2: printable characters and WSP only (control characters are obsolete syntax).
    assert re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n", head) is None, head
    utf8 = not head.isascii()
    if utf8:
        msg = email.message_from_string(data.decode("utf-8"), policy=email.policy.strict)
    else:
        msg = email.message_from_bytes(data, policy=email.policy.strict)
    allowed = (email.errors.NonASCIILocalPartDefect,) if utf8 else ()
    for part in msg.walk():
        assert not part.defects, part.defects
        for name, value in part.items():
            defects = [d for d in getattr(value, "defects", ()) if not isinstance(d, allowed)]
            assert not defects, (name, value, defects)
    return msg  # type: ignore[return-value]


@pytest.fixture
def tickets():
    """Five tickets of three teams (test_modes, test_spark_connect)."""
    import pandas as pd

    return pd.DataFrame({
        "team": ["core", "core", "web", "data", "web"],
        "manager": ["ana@example.com", "ana@example.com", "ben@example.com", "cy@example.com", "ben@example.com"],
        "ticket": [101, 102, 201, 301, 202],
        "title": ["Disk full", "<b>Leak</b>", "CSS", "ETL late", "Login"],
    })


def normalised(raw: bytes) -> bytes:
    """The message as received, but for what differs on every send: Date, Message-ID and the
    MIME boundaries (random per message), each boundary replaced by its position."""
    msg = email.message_from_bytes(raw, policy=email.policy.SMTP)
    boundaries = [p.get_boundary() for p in msg.walk() if p.is_multipart()]
    lines = [line for line in raw.split(b"\r\n") if not line.lower().startswith((b"date:", b"message-id:"))]
    out = b"\r\n".join(lines)
    for i, boundary in enumerate(boundaries):
        out = out.replace(boundary.encode(), f"==boundary-{i}==".encode())
    return out


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium (Playwright) for the whole run, for tests/browser.py's renders; a new
    page per render. Skipped, with the reason, when Playwright or a headless Chromium is missing
    (.ci/run installs Debian's chromium-headless-shell; MAILGEM_CHROMIUM names another)."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed here: the browser tests run in their own environment, "
                    "`make test-browser`")
    from browser import find_chromium

    executable = find_chromium()
    if executable is None:
        named = os.environ.get("MAILGEM_CHROMIUM")
        pytest.skip(f"MAILGEM_CHROMIUM={named!r} is not an executable file" if named else
                    "no headless Chromium: apt-get install chromium-headless-shell, or set MAILGEM_CHROMIUM")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=executable, timeout=60_000)
        except Error as exc:
            pytest.skip(f"{executable} could not be started: {exc}")
        yield launched
        launched.close()
