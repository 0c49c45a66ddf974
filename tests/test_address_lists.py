"""Address lists as users write them (issue 21 §6): an address that is not one is reported as
written, never as the fragment the stdlib parser makes of it (``'not an address'`` → ``not``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgem.connections.addresses import AddressError, mailbox_parts, parse_mailbox, split_address_list
from mailgem.runner.cli import main
from mailgem.gems.email.properties import split_addresses
from mailgem.gems.email.validate import validate


def _problems(to: str) -> list[tuple[str, str]]:
    props = {"connection": "c", "to": to, "subject": "s"}
    return [(d.path, d.message) for d in validate(props) if d.severity == "error"]


def test_text_without_an_address_is_named_as_written():
    assert split_addresses("not an address") == ["not an address"]
    [(path, message)] = _problems("not an address")
    assert path == "to[0]" and message.startswith("'not an address' is not a valid email address: ")


def test_one_bad_item_of_a_list_is_named_and_the_others_stay_valid():
    assert split_addresses("a@x.com, not an address") == ["a@x.com", "not an address"]
    [(path, message)] = _problems("a@x.com, not an address")
    assert path == "to[1]" and message.startswith("'not an address' is not a valid email address: ")


def test_a_display_name_without_angle_brackets_is_named_whole_with_the_fix():
    assert split_addresses("Bob Smith bob@x.com") == ["Bob Smith bob@x.com"]
    [(_, message)] = _problems("Bob Smith bob@x.com")
    assert message.startswith("'Bob Smith bob@x.com' is not a valid email address: ")
    assert "(a display name goes before the address in angle brackets: Bob Smith <bob@x.com>)" in message


def test_a_quoted_name_with_a_comma_is_one_address():
    assert split_addresses('"Doe, Jane" <jane@x.com>, b@y.com') == ['"Doe, Jane" <jane@x.com>', "b@y.com"]
    assert _problems('"Doe, Jane" <jane@x.com>, b@y.com') == []
    assert parse_mailbox('"Doe, Jane" <jane@x.com>').address == "jane@x.com"
    # Commas in a comment or between angle brackets do not split either.
    assert split_address_list("a@x.com (Smith, Bob), <b@y.com>") == ["a@x.com (Smith, Bob)", "<b@y.com>"]
    assert split_addresses("a@x.com (Smith, Bob)") == ['"Smith, Bob" <a@x.com>']


def test_what_the_parser_does_not_account_for_is_kept_as_written():
    # Two readings of one item, or an address that is not written as it was read.
    assert mailbox_parts("Bob <b@x.com> junk") is None
    assert mailbox_parts("Bob <b @ x.com>") is None
    assert split_addresses("Bob <b@x.com> junk") == ["Bob <b@x.com> junk"]
    with pytest.raises(AddressError, match=r"^'Bob <b@x.com> junk' is not one email address: "):
        parse_mailbox("Bob <b@x.com> junk")
    with pytest.raises(AddressError, match=r"^'not an address' is not a valid email address: "):
        parse_mailbox("Bob <not an address>")
    with pytest.raises(AddressError, match=r"separate addresses with commas"):
        parse_mailbox("a@x.com;b@y.com")


@pytest.mark.parametrize("value, says", [
    (42, "must be an address, a comma-separated text of addresses, or a list of them; not a number"),
    ({"a": 1}, "not a mapping"),
    (True, "not a boolean"),
    (["a@x.com", None], "addresses must be text; item 2 of the list is null"),
])
def test_addresses_of_another_type_are_a_sentence(value, says):
    with pytest.raises(ValueError, match=says):
        split_addresses(value)


def test_not_an_address_through_the_cli(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr("mailgem.runner.spark.local_spark", lambda *a, **k: pytest.fail("Spark was started"))
    (tmp_path / "data.csv").write_text("city\nOslo\n")
    (tmp_path / "job.yaml").write_text("name: t\nsource: {path: data.csv}\nemail:\n  connection: local\n"
                                       "  to: 'a@x.com, not an address'\n  subject: hi\n")
    assert main(["validate", str(tmp_path / "job.yaml"), "--local"]) == 2
    err = capsys.readouterr().err
    assert "job.yaml: email.to[1]: 'not an address' is not a valid email address" in err
    assert "'not'" not in err and "email.to[0]" not in err
