"""How to reach an SMTP server: the connection model, transport, and error taxonomy.

Knows SMTP and nothing about teams or gems.
"""

from .errors import *  # noqa: F403
from .errors import __all__ as _errors_all
from .addresses import AddressError, Mailbox, envelope_address, parse_mailbox
from .model import SecretRef, Security, SmtpConnection, TlsVersion, format_validation_error, is_mailbox
from .presets import PRESETS, preset_fields
from .delivery import Deliverer, Delivery
from .headers import PrefoldedHeader, prefolded
from .pool import SmtpPool
from .ratelimit import DailyLimitReached, RateLimiter, limiter_for
from .sync import run_sync
from .transport import CheckReport, RecipientRefusal, SendResult, SmtpSession, SmtpTransport, new_message_id

__all__ = [
    *_errors_all,
    "SecretRef", "Security", "SmtpConnection", "TlsVersion", "format_validation_error", "is_mailbox",
    "PRESETS", "preset_fields", "run_sync",
    "CheckReport", "RecipientRefusal", "SendResult", "SmtpSession", "SmtpTransport", "new_message_id",
    "AddressError", "Mailbox", "envelope_address", "parse_mailbox",
    "Deliverer", "Delivery", "PrefoldedHeader", "prefolded", "SmtpPool", "DailyLimitReached", "RateLimiter",
    "limiter_for",
]
