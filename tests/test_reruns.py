"""Runs that repeat: a Message-ID names one message (RFC 5322 §3.6.4), and a ledger entry counts
only for the destination it was sent to."""

from __future__ import annotations

import pandas as pd
from conftest import PASSWORD, PER_ROW, USER, fabric_for, parse

from fault_server import DATA_TIMEOUT_S, LATE_S, FaultServer
from mailgem.fabric import local_fabric
from mailgem.gems.email import EmailGem

# Both transaction paths: with PIPELINING (RFC 2920) and without.
PIPELINING_MODES = (True, False)

FRAME = pd.DataFrame({"n": [1, 2], "to": ["a@example.com", "b@example.com"]})


def _ids(server, count):
    return [parse(m.data)["Message-ID"] for m in server.wait_for_messages(count)]


def test_two_runs_the_same_day_get_new_message_ids(starttls_server):
    fabric = fabric_for(starttls_server)
    report = {"connection": "reports", "to": "ops@example.com", "subject": "Daily {{ run_date }}"}
    for _ in range(2):
        EmailGem(report, fabric, user=USER, name="daily").apply(None, FRAME)
        EmailGem(PER_ROW, fabric, user=USER, name="daily").apply(None, FRAME)
    ids = _ids(starttls_server, 6)
    assert len(set(ids)) == 6  # same job, same day, same keys: still six messages, six IDs
    assert all(i.startswith("<") and i.endswith(".mailgem@example.com>") for i in ids)


def test_a_ledgered_resend_of_a_possibly_delivered_message_keeps_its_id(starttls_server, tmp_path):
    # Run 1: message 1 is accepted but its reply comes after the client gave up (it may have been
    # delivered); message 2 is refused after DATA (it certainly was not).
    starttls_server.data_script = [LATE_S, "554 5.6.0 Message rejected"]
    props = PER_ROW | {"ledger": {"path": str(tmp_path / "l.sqlite"), "run_key": "2024-05-01"}}
    fabric = fabric_for(starttls_server, pool_size=1, data_timeout_s=DATA_TIMEOUT_S, max_attempts=1)
    first = EmailGem(props, fabric, user=USER, name="job").apply(None, FRAME)
    assert list(first["status"]) == ["failed", "failed"]
    second = EmailGem(props, fabric, user=USER, name="job").apply(None, FRAME)
    assert list(second["status"]) == ["sent", "sent"]
    assert second.iloc[0].message_id == first.iloc[0].message_id  # the same message, maybe a second copy
    assert second.iloc[1].message_id != first.iloc[1].message_id  # never delivered: a new message
    copies = [parse(m.data) for m in starttls_server.wait_for_messages(3)]
    assert [m["Subject"] for m in copies] == ["Message 1", "Message 1", "Message 2"]
    assert copies[0]["Message-ID"] == copies[1]["Message-ID"] != copies[2]["Message-ID"]


def test_a_ledger_entry_counts_only_for_its_destination(starttls_server, tmp_path):
    props = PER_ROW | {"ledger": {"path": str(tmp_path / "l.sqlite"), "run_key": "r1"}}
    # Trying the job on the embedded local server first (twice: the embedded server listens on a
    # new port each run, and its outbox is what stays the same) ...
    for expected in ("sent", "already_sent"):
        with local_fabric(tmp_path / "outbox", user=USER) as local:
            tried = EmailGem(props | {"connection": "local"}, local.fabric, user=USER, name="job").apply(None, FRAME)
            assert list(tried["status"]) == [expected, expected]
    assert f"embedded server, outbox {tmp_path / 'outbox'}" in tried.iloc[0].error
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2
    # ... does not make the real run skip anything.
    real = EmailGem(props, fabric_for(starttls_server), user=USER, name="job").apply(None, FRAME)
    assert list(real["status"]) == ["sent", "sent"]
    assert len(starttls_server.wait_for_messages(2)) == 2
    again = EmailGem(props, fabric_for(starttls_server), user=USER, name="job").apply(None, FRAME)
    assert list(again["status"]) == ["already_sent", "already_sent"]
    assert f"via analytics/reports 127.0.0.1:{starttls_server.port} as reports@example.com" in again.iloc[0].error
    assert list(again["message_id"]) == list(real["message_id"])
    # Same connection name, another server: another destination.
    with FaultServer(security="starttls", users={"reports@example.com": PASSWORD}) as other:
        moved = EmailGem(props, fabric_for(other), user=USER, name="job").apply(None, FRAME)
        assert list(moved["status"]) == ["sent", "sent"] and len(other.settled()) == 2
    assert len(starttls_server.settled()) == 2
