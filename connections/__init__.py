"""How to reach an SMTP server: the connection model, the transport, and the error taxonomy.

Knows SMTP and nothing about teams or gems. The names here are what users use: a connection
(:class:`SmtpConnection`, from fields, a URL or a preset), its transport (:class:`SmtpTransport`:
``check()`` for a "Test connection", ``send()``), delivery with retries (:class:`Deliverer`), and
the typed errors each SMTP failure becomes. The plumbing underneath (sessions, the pool, the
pipelining reader, prefolded headers, the sync facade) is imported from its own module.
"""

from .addresses import AddressError, Mailbox, parse_mailbox
from .delivery import Deliverer, Delivery
from .errors import (
    AuthenticationError, AuthNotSupportedError, ConfigError, ContentWithheldError, InsecureAuthError, MailgemError,
    MessageTooLargeError, RecipientsRefusedError, SecurityModeMismatchError, SenderRefusedError, ServerUnavailableError,
    SmtpConnectError, SmtpDisconnectedError, SmtpError, SmtpResponseError, SmtpTimeoutError, SmtpUtf8NotSupportedError,
    StartTlsNotOfferedError, TlsError)
from .gate import Gate
from .model import SecretRef, Security, SmtpConnection, TlsVersion
from .presets import PRESETS
from .ratelimit import DailyLimitReached
from .transport import CheckReport, RecipientRefusal, SendResult, SmtpTransport

__all__ = [
    "SmtpConnection", "SecretRef", "Security", "TlsVersion", "PRESETS",
    "SmtpTransport", "CheckReport", "SendResult", "RecipientRefusal",
    "Deliverer", "Delivery", "Gate", "DailyLimitReached",
    "AddressError", "Mailbox", "parse_mailbox",
    "MailgemError", "ConfigError", "SmtpError", "SmtpConnectError", "SmtpTimeoutError", "SmtpDisconnectedError",
    "ServerUnavailableError", "ContentWithheldError", "TlsError", "SecurityModeMismatchError",
    "StartTlsNotOfferedError", "InsecureAuthError", "AuthenticationError", "AuthNotSupportedError",
    "SenderRefusedError", "SmtpUtf8NotSupportedError", "RecipientsRefusedError", "MessageTooLargeError",
    "SmtpResponseError",
]
