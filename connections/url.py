"""SMTP connection URLs: ``smtp://user@host:587``, ``smtps://user@host:465/?timeout_s=30``.

``smtp`` means STARTTLS (required, not opportunistic), ``smtps`` implicit TLS (RFC 8314), and
``smtp+insecure`` plain SMTP for internal relays. Query parameters map to connection fields;
unknown ones are an error. A password in the URL is accepted only with a loud warning, and is
returned as a :class:`pydantic.SecretStr` to be put into a secret store, never into config.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import SecretStr

from .errors import ConfigError

__all__ = ["parse_url", "SCHEMES"]

log = logging.getLogger("mailgem.connections")

SCHEMES = {"smtp": "starttls", "smtps": "implicit_tls", "smtp+insecure": "none"}
DEFAULT_PORTS = {"starttls": 587, "implicit_tls": 465, "none": 25}

# Short aliases users write in URLs, mapped to field names.
_ALIASES = {"timeout": "timeout_s", "tls_skip_verify": "verify_certificates", "ehlo": "ehlo_hostname"}


def _query_value(key: str, value: str) -> Any:
    if key == "verify_certificates" or key in {"anonymous", "allow_insecure_auth"}:
        lowered = value.lower()
        if lowered not in {"true", "false", "1", "0", "yes", "no"}:
            raise ConfigError(f"URL parameter {key}={value!r} must be true or false")
        return lowered in {"true", "1", "yes"}
    return value


def parse_url(url: str, known_fields: set[str]) -> tuple[dict[str, Any], SecretStr | None]:
    """Split an SMTP URL into connection fields and an optional inline password.

    Returns:
        ``(fields, password)``: ``fields`` has host, port, security, username and the query
        parameters; ``password`` is set only when the URL carried one (a warning is emitted).

    Raises:
        ConfigError: unknown scheme, missing host, bad port, or an unknown query parameter.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            f"unsupported SMTP URL scheme {parts.scheme!r}: use smtp:// (STARTTLS), smtps:// "
            "(implicit TLS) or smtp+insecure:// (plain, internal relays only)"
        )
    if not parts.hostname:
        raise ConfigError("SMTP URL has no host, e.g. smtp://user@smtp.example.com:587")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"SMTP URL has an invalid port: {exc}") from None
    security = SCHEMES[scheme]
    fields: dict[str, Any] = {
        "host": parts.hostname,
        "port": port or DEFAULT_PORTS[security],
        "security": security,
    }
    if parts.username:
        fields["username"] = unquote(parts.username)
    for raw_key, value in parse_qsl(parts.query, keep_blank_values=True):
        key = _ALIASES.get(raw_key, raw_key)
        if key not in known_fields or key in {"host", "port", "security", "password", "url"}:
            raise ConfigError(
                f"unknown SMTP URL parameter {raw_key!r}; allowed: "
                + ", ".join(sorted(known_fields - {"host", "port", "security", "password", "url"}))
            )
        parsed = _query_value(key, value)
        if raw_key == "tls_skip_verify":
            parsed = not parsed
        fields[key] = parsed
    password = None
    if parts.password:
        # Never echo the URL itself: it holds the password.
        warnings.warn(
            "an SMTP URL carried a password: it is not stored in config; put it in the fabric's "
            "secret store (mailgem secrets set NAME) and reference it by name",
            UserWarning,
            stacklevel=3,
        )
        log.warning("SMTP URL for host %s carried an inline password; move it to a secret store", parts.hostname)
        password = SecretStr(unquote(parts.password))
    return fields, password
