"""email-validator's check of an addr-spec, with each domain checked once.

``validate_email`` checks the domain (IDNA, UTS #46, special-use names) again for every address:
about three quarters of its ~45 µs a call, the same answer for every address of a domain, and a
per_row run sends to thousands of addresses of a handful of domains. For the common form, an
ASCII addr-spec with an unquoted local part, no display name, no domain literal and no A-label,
:func:`validated` checks the local part with email-validator's own function and the domain with
email-validator's own function once per domain (cached). Any other address goes through
``validate_email`` whole. Both paths give the same answer: tests/test_address_check.py holds them
to it over generated addresses (hypothesis).
"""

from __future__ import annotations

import functools

import email_validator
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, EMAIL_MAX_LENGTH
from email_validator.syntax import validate_email_domain_name, validate_email_local_part

__all__ = ["validated", "EmailNotValidError"]

# What the fast path leaves to validate_email: quoting, display names, domain literals, bytes
# outside printable ASCII (NFC normalization, SMTPUTF8) and A-labels (a U-label's length differs).
_WHOLE_CHECK = frozenset('"<>[]\\ ')


@functools.lru_cache(maxsize=1024)
def _domain(domain: str, test_environment: bool, globally_deliverable: bool) -> str:
    """The ASCII form of an ASCII domain that email-validator accepts (raises its reason otherwise;
    a refused domain is not cached, and is checked again the next time)."""
    return validate_email_domain_name(domain, test_environment=test_environment,
                                      globally_deliverable=globally_deliverable)["ascii_domain"]


def validated(address: str) -> tuple[str, str, bool]:
    """``(local part, ASCII domain, needs SMTPUTF8)`` of a bare addr-spec, as
    ``email_validator.validate_email(address, check_deliverability=False)`` gives them, with
    email-validator's module-level defaults (``ALLOW_SMTPUTF8``, ``STRICT``, ...).

    Raises:
        EmailNotValidError: email-validator's reason, word for word.
    """
    local, at, domain = address.partition("@")
    if (not at or not address.isascii() or not address.isprintable() or len(address) > EMAIL_MAX_LENGTH
            or "@" in domain or "xn--" in domain.lower() or not _WHOLE_CHECK.isdisjoint(address)):
        valid = validate_email(address, check_deliverability=False)
        return valid.local_part or "", valid.ascii_domain, bool(valid.smtputf8)
    # The order of validate_email's own checks: the local part's reason comes first.
    info = validate_email_local_part(local, allow_smtputf8=email_validator.ALLOW_SMTPUTF8,
                                     allow_empty_local=email_validator.ALLOW_EMPTY_LOCAL, quoted_local_part=False,
                                     strict=email_validator.STRICT)
    if not domain:
        raise email_validator.EmailSyntaxError("There must be something after the @-sign.")
    ascii_domain = _domain(domain, email_validator.TEST_ENVIRONMENT, email_validator.GLOBALLY_DELIVERABLE)
    local_part = info["local_part"] or ""
    if local_part.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:  # RFC 2142 (validate_email does the same)
        local_part = local_part.lower()
    return local_part, ascii_domain, False
