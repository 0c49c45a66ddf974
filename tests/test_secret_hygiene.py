"""Secrets never appear in logs, reprs, exceptions or command output."""

from __future__ import annotations

import asyncio
import base64
import logging

import pandas as pd
import pytest
from conftest import LOGIN, PASSWORD, USER, connection_for, fabric_for

from mailgem.connections import SmtpError, SmtpTransport
from mailgem.gems.email import DeliveryError, EmailGem

WRONG = "Wr0ng-but-still-secret-77"


def _forms(secret: str) -> list[str]:
    """The secret and the encodings AUTH PLAIN / LOGIN put on the wire."""
    plain = base64.b64encode(f"\0{LOGIN}\0{secret}".encode()).decode()
    login = base64.b64encode(secret.encode()).decode()
    return [secret, plain, login]


@pytest.fixture
def all_logs(caplog):
    caplog.set_level(logging.DEBUG)  # every logger, aiosmtplib and aiosmtpd included
    for name in ("mail.log", "aiosmtplib", "asyncio"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield caplog
    logging.getLogger("mail.log").setLevel(logging.ERROR)


def test_no_secret_in_logs_reprs_or_errors(starttls_server, all_logs, capsys):
    texts: list[str] = []
    frame = pd.DataFrame({"a": [1]})
    good = fabric_for(starttls_server)
    transport = good.transport("reports", USER)
    texts += [repr(transport), str(transport), repr(good), repr(good.store()), repr(good.connection("reports")),
              good.model_dump_json(), repr(connection_for(starttls_server))]
    report = asyncio.run(transport.check())
    texts += report.lines()
    EmailGem({"connection": "reports", "to": "a@example.com", "subject": "s"}, good, user=USER).apply(None, frame)

    bad = fabric_for(starttls_server, password=WRONG)
    with pytest.raises(DeliveryError) as info:
        EmailGem({"connection": "reports", "to": "a@example.com", "subject": "s"}, bad, user=USER).apply(None, frame)
    texts += [str(info.value), repr(info.value), str(info.value.cause), repr(info.value.cause),
              info.value.report.to_string()]
    with pytest.raises(SmtpError) as info2:
        asyncio.run(SmtpTransport(bad.connection("reports"), bad.store().get("smtp-password")).send(
            __import__("email.message").message.EmailMessage()))
    texts += [str(info2.value), repr(info2.value)]

    out = capsys.readouterr()
    texts += [all_logs.text, out.out, out.err]
    assert any("AUTH" in t or "auth" in t for t in texts)  # the logs did cover authentication
    blob = "\n".join(texts)
    for secret in (PASSWORD, WRONG):
        for form in _forms(secret):
            assert form not in blob, f"a form of a secret leaked: {form[:4]}..."
    assert len(starttls_server.auth_attempts) >= 3
