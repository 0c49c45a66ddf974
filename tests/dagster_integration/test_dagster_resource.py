"""MailgemResource in Dagster runs against the tests' SMTP server: bad properties fail before
anything is sent, a failed message fails the run (retries allowed only with a ledger), secrets
reach no metadata, log or exception, and the resource's settings are checked with the fix.

Run by ``make test-dagster`` in .venv-dagster; without Dagster (``make test``) it is skipped."""

from __future__ import annotations

import email
import email.policy
import os
import signal
from typing import Any

import pandas as pd
import pytest

dagster = pytest.importorskip("dagster", reason="Dagster is not installed: `make test-dagster` runs these tests "
                                                "in .venv-dagster")

from conftest import PASSWORD  # noqa: E402
from test_dagster_example import fabric_file  # noqa: E402

from mailgem.dagster import MailgemResource, ResourceConfigError, failure_description, report_metadata  # noqa: E402

FRAME = pd.DataFrame({"n": [1, 2, 3], "to": ["a@example.com", "b@example.com", "c@example.com"]})
PER_ROW = {"mode": "per_row", "key_columns": ["n"], "to_column": "to", "subject": "Message {{ row.n }}",
           "text_body": "Hello {{ row.n }}", "on_error": "continue"}


def emailing(**properties: Any) -> Any:
    """An asset that sends FRAME with ``properties`` and records the report's metadata."""

    @dagster.asset
    def emailed(mailgem: MailgemResource) -> dagster.MaterializeResult:
        return dagster.MaterializeResult(metadata=report_metadata(mailgem.send(FRAME, **properties)))

    return emailed


@pytest.fixture
def resource(tmp_path, monkeypatch, starttls_server) -> MailgemResource:
    monkeypatch.setenv("MAILGEM_SECRET_SMTP_PASSWORD", PASSWORD)
    return MailgemResource(fabric=str(fabric_file(tmp_path, starttls_server)), connection="reports-smtp",
                           user="alice")


def step_failure(result: Any) -> Any:
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return event.step_failure_data


def materialize(asset: Any, resource: MailgemResource) -> Any:
    return dagster.materialize([asset], resources={"mailgem": resource}, raise_on_error=False)


def test_per_row_messages_and_their_counts(resource, starttls_server):
    result = materialize(emailing(**PER_ROW), resource)
    assert result.success
    received = starttls_server.wait_for_messages(3)
    assert sorted(m.rcpt_tos for m in received) == [("a@example.com",), ("b@example.com",), ("c@example.com",)]
    [materialization] = result.asset_materializations_for_node("emailed")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert (meta["messages"], meta["sent"], meta["failed"]) == (3, 3, 0) and "errors" not in meta


def test_a_second_input_is_sliced_per_message(resource, starttls_server):
    """``send(frame, in1=...)``: each message carries only the second input's rows of its key."""
    lines = pd.DataFrame({"order": [1, 1, 3], "item": ["pen", "ink", "pad"]})

    @dagster.asset
    def emailed(mailgem: MailgemResource) -> dagster.MaterializeResult:
        report = mailgem.send(FRAME, in1=lines, **PER_ROW, slice_by={"n": "order"},
                              attachments=[{"from": "in1", "file_name": "order-{{ row.n }}.csv"}])
        return dagster.MaterializeResult(metadata=report_metadata(report))

    assert materialize(emailed, resource).success
    items = {}
    for received in starttls_server.wait_for_messages(3):
        msg = email.message_from_bytes(received.data, policy=email.policy.default)
        [csv] = list(msg.iter_attachments())
        items[received.rcpt_tos[0]] = csv.get_content().split()[1:]  # the rows under the header
    assert items == {"a@example.com": ['1,"pen"', '1,"ink"'], "b@example.com": [], "c@example.com": ['3,"pad"']}


@pytest.mark.parametrize(("properties", "named"), [
    ({"colour": "red"}, "colour"),  # no such property
    ({"to_column": "manager"}, "manager"),  # no such column in the frame
    ({"subject": "{{ row.n"}, "subject"),  # a template that does not parse
    ({"to": ["not an address"]}, "not an address"),
], ids=["unknown-property", "missing-column", "bad-template", "bad-address"])
def test_a_bad_property_fails_the_run_before_anything_is_sent(resource, starttls_server, properties, named):
    result = materialize(emailing(**{**PER_ROW, **properties}), resource)
    assert not result.success
    failure = step_failure(result).user_failure_data
    assert named in failure.description and failure.description.endswith("Nothing was sent.")
    assert starttls_server.sessions_opened == 0 and not starttls_server.messages


def test_one_refused_recipient_fails_the_run_and_the_others_are_sent(resource, starttls_server):
    starttls_server.rcpt_refusals["b@example.com"] = "550 5.1.1 <b@example.com>: Recipient address rejected"
    result = materialize(emailing(**PER_ROW), resource)
    assert not result.success
    assert sorted(m.rcpt_tos[0] for m in starttls_server.wait_for_messages(2)) == ["a@example.com", "c@example.com"]
    failure = step_failure(result).user_failure_data
    assert failure.description.splitlines() == [
        "1 of 3 message(s) not delivered (1 failed):",
        "  row:[2]: failed 550 5.1.1 to b@example.com: " + failure.description.split("b@example.com: ", 1)[1]]
    meta = {k: v.value for k, v in failure.metadata.items()}
    assert (meta["messages"], meta["sent"], meta["failed"]) == (3, 2, 1) and "Recipient address rejected" in meta["errors"]


def test_retries_are_allowed_only_with_a_ledger(resource, starttls_server, tmp_path):
    # Without a ledger a retry would send the delivered messages again; with one it sends the rest.
    starttls_server.rcpt_refusals["b@example.com"] = "550 5.1.1 no such user"
    for ledger, retries in ((None, False), ({"path": str(tmp_path / "ledger.sqlite")}, True)):
        properties = {**PER_ROW, **({"ledger": ledger} if ledger else {})}
        with pytest.raises(dagster.Failure) as caught:
            resource.send(FRAME, **properties)  # outside a run: the resource opens its fabric for the call
        assert caught.value.allow_retries is retries


def test_on_error_stop_fails_with_the_report_of_what_was_handled(resource, starttls_server):
    starttls_server.rcpt_refusals["a@example.com"] = "550 5.1.1 no such user"
    report = resource.send(FRAME, **{**PER_ROW, "on_error": "stop"}, raise_on_failure=False)
    # The gem stopped at the failure: its report (DeliveryError's) is returned, not raised.
    assert list(report["status"][report["message_key"] == "row:[1]"]) == ["failed"]
    assert len(starttls_server.messages) == (report["status"] == "sent").sum() < 3
    assert failure_description(report).startswith("1 of ")


def test_no_secret_in_metadata_logs_or_failures(tmp_path, monkeypatch, starttls_server, capsys, caplog):
    # A wrong password: the login fails, the run fails, and the password it tried is nowhere.
    wrong = "Wr0ng-but-secret-7c1d"
    monkeypatch.setenv("MAILGEM_SECRET_SMTP_PASSWORD", wrong)
    resource = MailgemResource(fabric=str(fabric_file(tmp_path, starttls_server)), connection="reports-smtp",
                               user="alice")
    result = materialize(emailing(**PER_ROW), resource)
    assert not result.success and not starttls_server.messages
    failure = step_failure(result)
    seen = str(result.all_events) + str(failure) + str(capsys.readouterr()) + caplog.text
    assert "535" in seen or "uthentication" in seen
    assert wrong not in seen and PASSWORD not in seen
    # and in a successful run either
    monkeypatch.setenv("MAILGEM_SECRET_SMTP_PASSWORD", PASSWORD)
    result = materialize(emailing(**PER_ROW), resource)
    assert result.success
    assert PASSWORD not in str(result.all_events) + str(capsys.readouterr()) + caplog.text


def test_the_connection_is_named_in_one_place(tmp_path, resource):
    with pytest.raises(ResourceConfigError, match="differs from the resource's connection 'reports-smtp'"):
        resource.send(FRAME, connection="other", **PER_ROW)
    with pytest.raises(ResourceConfigError, match="no connection to send through"):
        MailgemResource(fabric=resource.fabric).send(FRAME, **PER_ROW)
    with pytest.raises(ResourceConfigError, match=r"needs fabric= .*local=True"):
        MailgemResource(connection="reports-smtp").send(FRAME, **PER_ROW)


def test_local_sends_through_the_embedded_server_whatever_the_connection(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = MailgemResource(local=True, connection="reports-smtp").send(FRAME, **PER_ROW)
    assert list(report["status"]) == ["sent"] * 3 and set(report["connection"]) == {"local"}
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 3


def test_a_broken_fabric_fails_the_run_before_the_asset_runs(tmp_path, resource, starttls_server):
    (tmp_path / "broken.yaml").write_text("name: t\nteams: []\nconnections: [{name: x, port: 99999}]\n")
    result = materialize(emailing(**PER_ROW), MailgemResource(fabric=str(tmp_path / "broken.yaml"),
                                                              connection="x"))
    assert not result.success and starttls_server.sessions_opened == 0
    text = str(result.all_events)
    assert "broken.yaml" in text and "RESOURCE_INIT_FAILURE" in text


def test_report_metadata_and_description_of_a_mixed_report():
    report = pd.DataFrame({
        "message_key": ["row:[1]", "row:[2]", "row:[3]", "row:[4]"],
        "status": ["sent", "partial", "deferred", "already_sent"],
        "recipients": ["a@x.org", "b@x.org, c@x.org", "d@x.org", "e@x.org"],
        "reply_code": pd.array([250, 250, None, None], dtype="Int64"),
        "enhanced_status": [None, None, None, None],
        "error": [None, "c@x.org: 550 no such user", "daily limit of 2 reached", "accepted in an earlier run"],
        "connection": ["c"] * 4,
    })
    meta = report_metadata(report)
    assert meta == {"messages": 4, "sent": 1, "failed": 0, "already_sent": 1, "deferred": 1, "partial": 1,
                    "connection": "c",
                    "errors": "1 message(s): c@x.org: 550 no such user\n1 message(s): daily limit of 2 reached"}
    assert failure_description(report).splitlines() == [
        "2 of 4 message(s) not delivered (1 partial, 1 deferred):",
        "  row:[2]: partial 250 to b@x.org, c@x.org: c@x.org: 550 no such user",
        "  row:[3]: deferred to d@x.org: daily limit of 2 reached"]
    assert failure_description(report[report["status"] == "sent"]) is None


def test_an_error_many_messages_share_is_written_once():
    report = pd.DataFrame({"message_key": [f"row:[{n}]" for n in range(1, 26)], "status": ["failed"] * 25,
                           "recipients": ["a@x.org"] * 25, "reply_code": pd.array([535] * 25, dtype="Int64"),
                           "enhanced_status": ["5.7.8"] * 25, "error": ["authentication failed"] * 25})
    lines = failure_description(report).splitlines()
    assert lines[0] == "25 of 25 message(s) not delivered (25 failed):"
    assert lines[1] == "  row:[1]: failed 535 5.7.8 to a@x.org - error #1" and len(lines) == 1 + 20 + 2
    assert lines[-2:] == ["  ... and 5 more (the delivery report has them all)",
                          "error #1 (25 messages): authentication failed"]


@pytest.mark.parametrize(("settings", "named"), [
    ({"connection": "reports-smpt"}, "reports-smpt"),  # a typo: the fabric has no such connection
    ({"user": "mallory"}, "mallory"),  # in none of the fabric's teams
], ids=["unknown-connection", "not-a-member"])
def test_a_wrong_connection_or_user_fails_before_anything_is_sent(resource, starttls_server, settings, named):
    fields = {"fabric": resource.fabric, "connection": resource.connection, "user": resource.user, **settings}
    result = materialize(emailing(**PER_ROW), MailgemResource(**fields))
    assert not result.success
    failure = step_failure(result).user_failure_data
    assert named in failure.description and failure.description.endswith("Nothing was sent.")
    assert starttls_server.sessions_opened == 0



def test_the_gem_is_named_after_the_asset_inside_a_run(resource, starttls_server):
    # The name keys the ledger: two assets sharing one must not take each other's messages.
    result = materialize(emailing(**{**PER_ROW, "subject": "{{ job }} {{ row.n }}"}), resource)
    assert result.success
    subjects = sorted(email.message_from_bytes(m.data, policy=email.policy.default)["Subject"]
                      for m in starttls_server.wait_for_messages(3))
    assert subjects == ["emailed 1", "emailed 2", "emailed 3"]
    starttls_server.messages.clear()
    resource.send(FRAME.head(1), **{**PER_ROW, "subject": "{{ job }}"})  # outside a run
    [received] = starttls_server.wait_for_messages(1)
    assert email.message_from_bytes(received.data, policy=email.policy.default)["Subject"] == "email"


def test_two_assets_sharing_a_ledger_each_send_their_own(resource, starttls_server, tmp_path):
    ledger = {"path": str(tmp_path / "ledger.sqlite")}

    @dagster.asset
    def first(mailgem: MailgemResource) -> None:
        mailgem.send(FRAME, to="ops@example.com", subject="first", ledger=ledger)

    @dagster.asset
    def second(mailgem: MailgemResource) -> None:
        mailgem.send(FRAME, to="ops@example.com", subject="second", ledger=ledger)

    assert dagster.materialize([first, second], resources={"mailgem": resource}).success
    assert len(starttls_server.wait_for_messages(2)) == 2
    # The same run again: the ledger has both, nothing is sent twice.
    assert dagster.materialize([first, second], resources={"mailgem": resource}).success
    assert starttls_server.wait_for_closed_sessions() and len(starttls_server.messages) == 2


def test_a_terminated_run_finishes_the_messages_being_written_and_reports_the_rest(resource, starttls_server):
    # Dagster terminates a run with SIGTERM: no new message starts, none is cut mid-transaction.
    frame = pd.DataFrame({"n": range(1, 41), "to": [f"u{n}@example.com" for n in range(1, 41)]})
    # The signal comes as the first message's content arrives (sending has begun, surely); each
    # message takes a while to be accepted.
    starttls_server.data_script = [lambda envelope: os.kill(os.getpid(), signal.SIGTERM)] + [("hold", 0.2)] * 39

    handlers: list[Any] = []

    @dagster.asset
    def emailed(mailgem: MailgemResource) -> None:
        handlers.append(signal.getsignal(signal.SIGTERM))
        try:
            mailgem.send(frame, **PER_ROW, raise_on_failure=False)  # a terminated run fails all the same
        finally:
            handlers.append(signal.getsignal(signal.SIGTERM))

    result = materialize(emailed, resource)
    assert handlers[0] is handlers[1]  # Dagster's handler is back once the send is over
    assert not result.success
    failure = step_failure(result).user_failure_data
    meta = {k: v.value for k, v in failure.metadata.items()}
    assert 0 < meta["sent"] < 40 and meta["sent"] + meta["not_started"] == 40, meta
    assert "stopped by SIGTERM" in failure.description
    starttls_server.wait_for_closed_sessions()
    assert len(starttls_server.messages) == meta["sent"]  # every message written was finished and counted
