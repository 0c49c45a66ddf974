"""The SMTP connection model: every field a connection form has, validated in one place."""

from __future__ import annotations

import codecs
import re
from urllib.parse import urlsplit
import ssl
from pathlib import Path
from typing import Any, Literal

from email_validator import EmailNotValidError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from .addresses import check_address
from .secretref import SecretRef
from .dkim import DkimOptions
from .dsn import DsnOptions
from .oauth2 import OAuth2Options
from .proxy import ProxyOptions
from .errors import ConfigError
from .presets import preset_fields
from .url import parse_url
from .yaml_types import describe_type

__all__ = ["SecretRef", "SmtpConnection", "Security", "TlsVersion", "is_mailbox"]

# An ASCII domain name: dot-separated LDH labels (RFC 1035 §2.3.1), one label allowed.
_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")

Security = Literal["starttls", "implicit_tls", "none"]
TlsVersion = Literal["1.2", "1.3"]


def _text(value: Any, key: str, what: str) -> str:
    """``value`` when it is text; a wrong type is a sentence naming ``key`` (a key a validator
    takes out of the data, so pydantic cannot name it)."""
    if not isinstance(value, str):
        raise ValueError(f"{key}: must be {what}, not {describe_type(value)}")
    return value


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; ``False`` too for a name the system refuses (too long, a NUL)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def is_mailbox(value: str, special_domains: tuple[str, ...] = ()) -> bool:
    """True when ``value`` is a syntactically valid address (email-validator, no DNS lookups);
    ``special_domains``: see :func:`mailgem.connections.addresses.check_address`."""
    try:
        check_address(value, special_domains)
    except EmailNotValidError:
        return False
    return True


class SmtpConnection(BaseModel):
    """One SMTP connection as stored in a fabric.

    Build it from fields, from a URL (``url: smtps://user@host:465/?timeout_s=30``) or from a
    provider preset (``preset: gmail``; ``preset: ses`` with ``region``); explicit fields win over
    both. The sender is the connection's identity: ``sender_address`` is both the From address and
    the envelope sender (``MAIL FROM``, RFC 5321 §4.1.1.2) and defaults to ``username`` when that is
    an address.

    Raises:
        pydantic.ValidationError: on any wrong or conflicting field, with a sentence saying how
            to fix it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$", description="Connection name, unique in a fabric.")
    host: str = Field(min_length=1, description="SMTP server host name or IP address.")
    port: int = Field(ge=1, le=65535, description="TCP port: 587 (STARTTLS), 465 (implicit TLS), 25 (relay).")
    security: Security = Field(default="starttls", description="starttls (required, never opportunistic), implicit_tls, or none.")
    min_tls_version: TlsVersion = Field(default="1.2", description="Lowest TLS version accepted.")
    verify_certificates: bool = Field(default=True, description="Verify the server certificate and host name.")
    ca_bundle: Path | None = Field(default=None, description="PEM file of CAs to trust (a private relay's CA), so verification can stay on.")
    username: str | None = Field(default=None, description="Login for AUTH.")
    password: SecretRef | None = Field(default=None, description="Secret holding the password or API key.")
    anonymous: bool = Field(default=False, description="No AUTH at all (internal relays); needs sender_address.")
    allow_insecure_auth: bool = Field(default=False, description="Allow AUTH over an unencrypted connection (security none only).")
    sender_address: str | None = Field(default=None, description="Address the credential may send as; defaults to username when that is an address.")
    sender_name: str | None = Field(default=None, description="Display name shown in From.")
    ehlo_hostname: str | None = Field(default=None, description="Name sent in EHLO; defaults to this machine's FQDN.")
    connect_timeout_s: float = Field(default=30.0, gt=0, le=3600, description="Timeout to connect and read the greeting, seconds.")
    # RFC 5321 §4.5.3.2: servers may take 5 minutes to answer MAIL/RCPT and 10 minutes to
    # answer the end of DATA; giving up sooner risks a duplicate (the server may have accepted).
    timeout_s: float = Field(default=300.0, gt=0, le=3600, description="Timeout for each SMTP command's reply, seconds (RFC 5321 §4.5.3.2: 5 min).")
    pipelining: bool = Field(default=True, description=(
        "Send each message's MAIL FROM, RCPT TO and DATA as one group when the server offers PIPELINING (RFC 2920)."))
    data_timeout_s: float = Field(default=600.0, gt=0, le=3600, description="Timeout for the reply to the end of DATA, seconds (RFC 5321 §4.5.3.2.6: 10 min).")
    pool_size: int = Field(default=4, ge=1, le=64, description="Authenticated connections kept open and reused per process.")
    max_messages_per_connection: int = Field(default=100, ge=1, description="Reconnect after this many messages on one connection.")
    rate_per_s: float | None = Field(default=None, gt=0, description="At most this many messages per second through this connection, per process.")
    max_per_day: int | None = Field(default=None, ge=1, description="Provider's daily sending cap (e.g. 500 for Gmail), per process and UTC day.")
    max_attempts: int = Field(default=4, ge=1, le=20, description="Attempts per message for transient failures (4xx, dropped connection, timeout).")
    retry_initial_s: float = Field(default=1.0, ge=0, le=3600, description="First retry delay, seconds; doubles each time, with jitter.")
    retry_max_s: float = Field(default=60.0, ge=0, le=86400, description="Longest retry delay, seconds.")
    retry_outage_s: float = Field(default=300.0, ge=0, le=86400, description=(
        "How long a run waits out a server that stopped answering mid-run (connection refused or timed out, "
        "421 at connect), seconds: messages are held, not failed, while one session is retried with backoff; "
        "then the rest fail with the reason. 0: no waiting."))
    fallback: str | None = Field(default=None, description="Connection in the same fabric to use when this one is unreachable or rejects AUTH.")
    charset: str = Field(default="utf-8", description="Charset of text and HTML parts.")
    auth: OAuth2Options | None = Field(default=None, description=(
        "OAuth2 instead of a password (SASL XOAUTH2): {type: oauth2, provider: office365 | google | generic, "
        "token_url, tenant, client_id, client_secret: {secret}, refresh_token: {secret}, scope}."))
    proxy: ProxyOptions | None = Field(default=None, description=(
        "Reach the server through a proxy: socks5://[user@]host:port or http://[user@]host:port (CONNECT), or "
        "{url, password: {secret: NAME}}; TLS stays end to end with the server."))
    dkim: DkimOptions | None = Field(default=None, description=(
        "DKIM signing (RFC 6376): {domain, selector, private_key: {secret: NAME}, headers: [...]}; relaxed/relaxed, "
        "rsa-sha256 or ed25519-sha256 by the key."))
    dsn: DsnOptions | None = Field(default=None, description=(
        "Delivery status notifications (RFC 3461): {notify: [failure, delay] | never, ret: headers | full}; "
        "sent only to servers that advertise DSN."))
    allowed_special_domains: tuple[str, ...] = Field(default=(), description=(
        "Domains of an internal relay that addresses may use although they are special-use (RFC 6761: local, "
        "internal, localhost, ...) or a single label (a company relay's host); each also allows its subdomains. "
        "Off by default; every other address is validated as usual."))
    max_message_bytes: int = Field(default=25 * 1024 * 1024, gt=0, description="mailgem's own size cap when the server advertises no SIZE, bytes.")

    _inline_password: SecretStr | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _expand_url_and_preset(cls, data: Any, handler: Any) -> Any:
        inline_password = None
        if isinstance(data, dict) and ("url" in data or "preset" in data):
            data = dict(data)
            base: dict[str, Any] = {}
            if "preset" in data:
                preset = _text(data.pop("preset"), "preset", "a provider's name, e.g. gmail")
                region = data.pop("region", None)
                region = None if region is None else _text(region, "region", "an AWS region, e.g. eu-west-1")
                base.update(preset_fields(preset, region))
            if "url" in data:
                url = _text(data.pop("url"), "url", "an SMTP URL, e.g. smtps://user@smtp.example.com:465")
                url_fields, inline_password = parse_url(url, set(cls.model_fields))
                base.update(url_fields)
            base.update(data)
            data = base
        instance = handler(data)
        if inline_password is not None:
            instance._inline_password = inline_password
        return instance

    @field_validator("charset")
    @classmethod
    def _known_charset(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except (LookupError, ValueError):  # ValueError: a NUL in the name
            raise ValueError(f"unknown charset {value!r}; use utf-8 unless a recipient system needs another") from None
        return value

    @field_validator("ehlo_hostname")
    @classmethod
    def _ehlo_is_a_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c.isspace() for c in value)):
            raise ValueError("ehlo_hostname must be a domain name or address literal without spaces (RFC 5321 §4.1.1.1)")
        return value

    @field_validator("allowed_special_domains", mode="before")
    @classmethod
    def _domain_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            return value  # pydantic says it must be a list, at this field
        out = []
        for item in value:
            name = item.strip().strip(".").lower() if isinstance(item, str) else ""
            if not _DOMAIN.fullmatch(name):
                raise ValueError(f"allowed_special_domains: {item!r} is not a domain name (e.g. internal, corp.local, "
                                 "relay)")
            out.append(name)
        return tuple(out)

    @field_validator("sender_name")
    @classmethod
    def _no_line_breaks(cls, value: str | None) -> str | None:
        if value is not None and ("\r" in value or "\n" in value):
            raise ValueError("sender_name must not contain line breaks")
        return value

    @model_validator(mode="after")
    def _check_combination(self) -> SmtpConnection:
        # All option conflicts in one place, as sentences.
        if self.sender_address is not None and not is_mailbox(self.sender_address, self.allowed_special_domains):
            raise ValueError(f"sender_address {self.sender_address!r} is not a valid email address")
        if self.anonymous:
            if self.username or self.password:
                raise ValueError("an anonymous connection sends no AUTH: remove username and password, or set anonymous: false")
            if not self.sender_address:
                raise ValueError("an anonymous relay has no login to send as: state sender_address, the address this relay lets you send as")
        else:
            if not self.username:
                raise ValueError("username is required unless anonymous: true (for an internal relay without AUTH)")
            if self.auth is not None and (self.password is not None or self._inline_password is not None):
                raise ValueError("give password or auth (OAuth2), not both")
            if self.auth is None and self.password is None and self._inline_password is None:
                raise ValueError("password is required: reference a secret, e.g. password: {secret: NAME}, or use "
                                 "auth: {type: oauth2, ...}")
            if self.sender_address is None and not is_mailbox(self.username, self.allowed_special_domains):
                raise ValueError(
                    f"the login {self.username!r} is not a mailbox (as with SendGrid's 'apikey' or SES access "
                    "keys): state sender_address, the address this credential is authorised to send as"
                )
            if self.security == "none" and not self.allow_insecure_auth:
                raise ValueError(
                    "security none would send the password unencrypted: use starttls or implicit_tls, or, for a "
                    "trusted internal relay, set allow_insecure_auth: true (or anonymous: true)"
                )
        if self.dkim is not None:
            domain = self.sender.rpartition("@")[2].lower()
            if domain != self.dkim.domain and not domain.endswith("." + self.dkim.domain):
                raise ValueError(
                    f"dkim.domain {self.dkim.domain!r} is not the sender's domain ({domain}) or a parent of it, so "
                    "receivers applying DMARC would not count the signature: sign as the sender's domain")
        if self.allow_insecure_auth and self.security != "none":
            raise ValueError("allow_insecure_auth only applies to security none; remove it")
        if self.fallback == self.name:
            raise ValueError("a connection cannot be its own fallback")
        if self.ca_bundle is not None and not _is_file(self.ca_bundle):
            raise ValueError(f"ca_bundle {str(self.ca_bundle)!r} is not a readable file")
        return self

    def options(self) -> list[str]:
        """The options that change what is sent or whom to, one ``name: value`` each (for
        ``mailgem connection test``); never a secret's value."""
        out = []
        if self.auth is not None:
            out.append("auth: " + self.auth.describe())
        if self.proxy is not None:
            user = urlsplit(self.proxy.url).username
            out.append(f"proxy: {self.proxy.address}" + (f" as {user}" if user else "")
                       + (f", password from secret {self.proxy.password.secret!r}" if self.proxy.password else ""))
        if self.dkim is not None:
            out.append(f"dkim: d={self.dkim.domain} s={self.dkim.selector}, key from secret "
                       f"{self.dkim.private_key.secret!r}, relaxed/relaxed, h={':'.join(self.dkim.headers)}")
        if self.dsn is not None:
            out.append(f"dsn: notify {','.join(self.dsn.notify)}, ret {self.dsn.ret} (RFC 3461; only where the server "
                       "advertises DSN)")
        if self.allowed_special_domains:
            out.append("allowed_special_domains: " + ", ".join(self.allowed_special_domains)
                       + " (addresses there pass although special-use or single-label)")
        return out

    @property
    def sender(self) -> str:
        """The address used as From and as the envelope sender (``MAIL FROM``)."""
        return self.sender_address or str(self.username)

    @classmethod
    def from_url(cls, url: str, **fields: Any) -> SmtpConnection:
        """Build a connection from an SMTP URL plus any other fields (``name`` is required).

        Raises:
            ConfigError: the URL or a field is wrong.
        """
        return cls.build({"url": url, **fields})

    @classmethod
    def from_preset(cls, preset: str, **fields: Any) -> SmtpConnection:
        """Build a connection from a provider preset (gmail, office365, outlook, sendgrid,
        mailgun, ses, yahoo) plus the fields the preset does not fix (name, username, password).

        Raises:
            ConfigError: unknown preset or a wrong field.
        """
        return cls.build({"preset": preset, **fields})

    @classmethod
    def build(cls, data: dict[str, Any]) -> SmtpConnection:
        """Validate ``data`` into a connection, turning validation errors into one :class:`ConfigError`."""
        from pydantic import ValidationError

        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, f"connection {data.get('name', '?')!r}", data)) from None

    def tls_context(self) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` with this connection's TLS policy (minimum version, verification, CAs)."""
        context = ssl.create_default_context(cafile=str(self.ca_bundle) if self.ca_bundle else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_3 if self.min_tls_version == "1.3" else ssl.TLSVersion.TLSv1_2
        if not self.verify_certificates:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def format_validation_error(exc: Any, where: str, data: Any = None) -> str:
    """One readable message from a pydantic ``ValidationError``: ``where: a.b[0].c: message``,
    one line per field, every line with a path (``(top level)`` for the document itself).

    Given the validated ``data`` (the document as read), the path is the YAML path: pydantic
    also names the member of a union it tried (``chart.y.str``, ``secrets.directory.path``),
    which is no key of the file, so those parts are left out and the members' messages about
    one field are joined (``Input should be a valid string, or Input should be a valid list``).
    """
    messages: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False, include_input=False):
        path = _yaml_path(error, data) if data is not None else _loc_path(error["loc"])
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        found = messages.setdefault(path or "(top level)", [])
        if message not in found:
            found.append(message)
    return "\n".join(f"{where}: {path}: {', or '.join(found)}" for path, found in messages.items())


def _loc_path(loc: tuple[Any, ...]) -> str:
    """``a.b[0].c`` from a pydantic location, as it is."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _yaml_path(error: Any, data: Any) -> str:
    """The YAML path of ``error``'s location, following ``data``.

    A part that is a key of the mapping (or an index of the list) it applies to is kept. Any
    other part names a union member (left out), except the last one of an error that is not
    about the value's type: a missing field, or one a validator filled in (a connection URL's
    ``port``), has no key in the file but is the field to name.
    """
    loc, path, node = error["loc"], "", data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            path += f".{part}" if path else str(part)
            node = node[part]
        elif isinstance(part, int) and not isinstance(node, dict):
            path += f"[{part}]"  # an item of a list, or of one a validator made (``notify: failure``)
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
        elif i == len(loc) - 1 and not _names_member(part, node, error["type"]):
            path += f".{part}" if path else str(part)
    return path


def _names_member(part: Any, node: Any, error_type: str) -> bool:
    """Whether the last part of an error's location, not a key of ``node``, names the union
    member tried rather than a field: the error is about the value's type (``chart.y.str``:
    ``string_type``), or the part is the value of the node's discriminator (a rule of that
    member's model: ``secrets.encrypted_file``)."""
    if error_type.endswith("_type"):
        return True
    return isinstance(node, dict) and any(isinstance(v, str) and v == part for v in node.values())
