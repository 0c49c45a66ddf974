"""The SMTP connection model: URLs, presets, option conflicts, sender identity."""

from __future__ import annotations

import warnings

import pytest
from pydantic import ValidationError

from mailgem.connections import ConfigError, SmtpConnection

REF = {"secret": "smtp-password"}


def test_url_with_query_parameters_maps_to_fields():
    c = SmtpConnection.from_url("smtps://me%40example.com@smtp.example.com/?timeout=30&ehlo=etl.example.com&min_tls_version=1.3",
                                name="r", password=REF)
    assert (c.host, c.port, c.security, c.username) == ("smtp.example.com", 465, "implicit_tls", "me@example.com")
    assert c.timeout_s == 30 and c.ehlo_hostname == "etl.example.com" and c.min_tls_version == "1.3"
    assert c.sender == "me@example.com"


def test_url_schemes_and_default_ports():
    assert SmtpConnection.from_url("smtp://a@example.com@h", name="r", password=REF).port == 587
    relay = SmtpConnection.from_url("smtp+insecure://h/?anonymous=true&sender_address=etl@example.com", name="r")
    assert (relay.security, relay.port, relay.anonymous) == ("none", 25, True)
    skip = SmtpConnection.from_url("smtp://a@example.com@h/?tls_skip_verify=true", name="r", password=REF)
    assert skip.verify_certificates is False


@pytest.mark.parametrize("url, fragment", [
    ("smtp://a@example.com@h/?colour=blue", "unknown SMTP URL parameter 'colour'"),
    ("http://h", "unsupported SMTP URL scheme"),
    ("smtp://a@example.com@h/?verify_certificates=maybe", "must be true or false"),
    ("smtp:///nohost", "no host"),
])
def test_bad_urls_are_clear_errors(url, fragment):
    with pytest.raises(ConfigError, match=fragment):
        SmtpConnection.from_url(url, name="r", password=REF)


def test_password_in_url_warns_and_never_lands_in_config():
    with pytest.warns(UserWarning, match="secret store"):
        c = SmtpConnection.from_url("smtp://me%40example.com:hunter2-secret@h", name="r")
    assert "hunter2-secret" not in repr(c) and "hunter2-secret" not in c.model_dump_json()
    assert c._inline_password.get_secret_value() == "hunter2-secret"


@pytest.mark.parametrize("preset, host, port, security", [
    ("gmail", "smtp.gmail.com", 587, "starttls"),
    ("office365", "smtp.office365.com", 587, "starttls"),
    ("outlook", "smtp-mail.outlook.com", 587, "starttls"),
    ("mailgun", "smtp.mailgun.org", 587, "starttls"),
    ("yahoo", "smtp.mail.yahoo.com", 465, "implicit_tls"),
])
def test_presets(preset, host, port, security):
    c = SmtpConnection.from_preset(preset, name="r", username="me@example.com", password=REF)
    assert (c.host, c.port, c.security) == (host, port, security)


def test_ses_needs_region_and_sender():
    with pytest.raises(ConfigError, match="region"):
        SmtpConnection.from_preset("ses", name="r", username="AKIAEXAMPLE", password=REF)
    with pytest.raises(ConfigError, match="sender_address"):
        SmtpConnection.from_preset("ses", region="eu-west-1", name="r", username="AKIAEXAMPLE", password=REF)
    c = SmtpConnection.from_preset("ses", region="eu-west-1", name="r", username="AKIAEXAMPLE", password=REF,
                                   sender_address="reports@example.com")
    assert c.host == "email-smtp.eu-west-1.amazonaws.com" and c.sender == "reports@example.com"


def test_sendgrid_login_is_not_a_mailbox():
    with pytest.raises(ConfigError, match="not a mailbox"):
        SmtpConnection.from_preset("sendgrid", name="r", password=REF)
    c = SmtpConnection.from_preset("sendgrid", name="r", password=REF, sender_address="alerts@example.com")
    assert c.username == "apikey" and c.sender == "alerts@example.com"


@pytest.mark.parametrize("fields, fragment", [
    ({"anonymous": True, "username": None, "password": None}, "sender_address"),
    ({"anonymous": True}, "remove username and password"),
    ({"password": None}, "password is required"),
    ({"security": "none"}, "allow_insecure_auth"),
    ({"allow_insecure_auth": True}, "only applies to security none"),
    ({"charset": "klingon-8"}, "unknown charset"),
    ({"ehlo_hostname": "two words"}, "RFC 5321"),
    ({"port": 70000}, "less than or equal to 65535"),
    ({"colour": "blue"}, "Extra inputs are not permitted"),
    ({"password": "plain-text-pw"}, "secret reference"),
])
def test_option_conflicts_are_sentences(fields, fragment):
    base = {"name": "r", "host": "h", "port": 587, "username": "me@example.com", "password": REF} | fields
    with pytest.raises(ValidationError) as info:
        SmtpConnection(**base)
    assert fragment in str(info.value)
    assert "plain-text-pw" not in str(info.value)


def test_preset_fields_can_be_overridden_and_model_is_frozen():
    c = SmtpConnection.from_preset("gmail", name="r", username="me@example.com", password=REF, port=465,
                                   security="implicit_tls")
    assert c.port == 465
    with pytest.raises(ValidationError):
        c.port = 25  # type: ignore[misc]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert c.tls_context().minimum_version.name == "TLSv1_2"
