"""Provider presets: host, port and security for well-known SMTP services.

A preset fills only what is fixed by the provider; username, password secret and (where the
login is not a mailbox) ``sender_address`` still come from whoever stores the connection.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

__all__ = ["PRESETS", "preset_fields"]

# Submission on 587 with STARTTLS is what each provider documents first (RFC 8314 prefers 465,
# but several corporate firewalls only open 587).
PRESETS: dict[str, dict[str, Any]] = {
    "gmail": {"host": "smtp.gmail.com", "port": 587, "security": "starttls"},
    "office365": {"host": "smtp.office365.com", "port": 587, "security": "starttls"},
    "outlook": {"host": "smtp-mail.outlook.com", "port": 587, "security": "starttls"},
    # SendGrid's login is always the literal "apikey": the sender must be stated.
    "sendgrid": {"host": "smtp.sendgrid.net", "port": 587, "security": "starttls", "username": "apikey"},
    "mailgun": {"host": "smtp.mailgun.org", "port": 587, "security": "starttls"},
    "yahoo": {"host": "smtp.mail.yahoo.com", "port": 465, "security": "implicit_tls"},
    # SES needs a region: email-smtp.<region>.amazonaws.com
    "ses": {"host": "email-smtp.{region}.amazonaws.com", "port": 587, "security": "starttls"},
}


def preset_fields(preset: str, region: str | None = None) -> dict[str, Any]:
    """Return the connection fields a provider preset fills in.

    Raises:
        ConfigError: unknown preset, or ``ses`` without a region (or a region with another preset).
    """
    key = preset.lower()
    if key not in PRESETS:
        raise ConfigError(f"unknown provider preset {preset!r}; choose one of: {', '.join(sorted(PRESETS))}")
    fields = dict(PRESETS[key])
    if key == "ses":
        if not region:
            raise ConfigError("preset 'ses' needs a region, e.g. region: eu-west-1 (the SES SMTP endpoint is per region)")
        fields["host"] = fields["host"].format(region=region)
    elif region:
        raise ConfigError(f"region is only used by the 'ses' preset, not {preset!r}")
    return fields
