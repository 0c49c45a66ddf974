"""``SmtpTransport``: one SMTP connection as the rest of mailgem uses it, over the modules that
do the work (each imports only those below it; none imports this one):

* :mod:`.identity`: the sender (From, ``MAIL FROM``, flattening, DKIM);
* :mod:`.memory`: what the run learnt of the server (a permanent refusal is never asked again);
* :mod:`.session` and :mod:`.outcome`: one session's mail transactions and what their replies mean;
* :mod:`.opening`: connect, TLS, EHLO, STARTTLS, AUTH;
* :mod:`.check`: the connection test.

The pool (:mod:`.pool`) and delivery (:mod:`.delivery`) sit on top of this one.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from email.message import EmailMessage

from pydantic import SecretStr

from .check import CheckReport
from .check import check as check_connection
from .errors import ConfigError, InsecureAuthError, SmtpError
from .identity import IDENTITY_HEADERS, SenderIdentity, new_message_id
from .memory import ServerMemory
from .model import SmtpConnection
from .oauth2 import TokenSource
from .opening import Opener
from .session import (
    MAX_RCPT_PER_TRANSACTION,
    RecipientRefusal,
    SendResult,
    SmtpSession,
    envelope_recipients,
)

__all__ = ["SmtpTransport", "SmtpSession", "SendResult", "RecipientRefusal", "CheckReport", "MAX_RCPT_PER_TRANSACTION",
           "envelope_recipients", "new_message_id", "IDENTITY_HEADERS"]


class SmtpTransport:
    """Connect to one :class:`SmtpConnection` and send through it.

    ``password`` is the value resolved from the fabric's secret store; it is unwrapped only at
    AUTH and never logged or shown in ``repr``.

    Example::

        async with SmtpTransport(conn, password).connect() as session:
            result = await session.send(message)

    Raises:
        ConfigError: DKIM or OAuth2 secrets were not resolved, or the DKIM key is not a key.
        InsecureAuthError: the connection authenticates and no password was resolved.
    """

    def __init__(self, connection: SmtpConnection, password: SecretStr | None = None, *,
                 identity_only: bool = False, dkim_key: SecretStr | None = None,
                 proxy_password: SecretStr | None = None, tokens: TokenSource | None = None) -> None:
        self.connection = connection
        # Previews and dry runs: the connection's From and envelope sender, no secret, no session.
        self.identity_only = identity_only
        self.identity = SenderIdentity(connection, dkim_key, signs=not identity_only)
        # The first permanent refusal, whether a session opened, the sender verified: pickled
        # with the transport to Spark workers (see ServerMemory).
        self.memory = ServerMemory(connection.name)
        password = password if password is not None else connection._inline_password
        if connection.auth is not None and tokens is None and not identity_only:
            raise ConfigError(f"connection {connection.name!r} authenticates with OAuth2 but its secrets were not "
                              "resolved: resolve the connection through its fabric")
        if not connection.anonymous and connection.auth is None and password is None and not identity_only:
            raise InsecureAuthError(
                f"connection {connection.name!r} needs a password to authenticate but none was resolved",
                hint="resolve the connection through its fabric so the password secret is looked up",
            )
        self._opener = Opener(connection, self.identity, self.memory, password=password, tokens=tokens,
                              proxy_password=proxy_password, preview=identity_only)

    def __repr__(self) -> str:
        c = self.connection
        return f"SmtpTransport(name={c.name!r}, host={c.host!r}, port={c.port}, security={c.security!r}, user={c.username!r})"

    # -- the sender (identity.py) ----------------------------------------------------------

    @property
    def envelope_sender(self) -> str:
        """The envelope sender (``MAIL FROM``), its domain as an A-label."""
        return self.identity.envelope_sender

    @property
    def sender_smtputf8(self) -> bool:
        """Whether the sender's local part needs SMTPUTF8 (RFC 6531)."""
        return self.identity.sender_smtputf8

    @property
    def domain(self) -> str:
        """The sender's domain in ASCII: the right-hand side of Message-IDs (RFC 5322 §3.6.4)."""
        return self.identity.domain

    def needs_smtputf8(self, recipients: Iterable[str]) -> bool:
        """See :meth:`SenderIdentity.needs_smtputf8`."""
        return self.identity.needs_smtputf8(recipients)

    def flatten(self, message: EmailMessage, *, utf8: bool = False) -> bytes:
        """See :meth:`SenderIdentity.flatten`."""
        return self.identity.flatten(message, utf8=utf8)

    # -- what the run learnt of the server (memory.py) -------------------------------------

    @property
    def refusal(self) -> SmtpError | None:
        """The first permanent refusal of this run, if any."""
        return self.memory.refusal

    @property
    def reached(self) -> bool:
        """A session of this connection opened in this process."""
        return self.memory.reached

    @property
    def sender_verified(self) -> bool:
        """The server accepted the sender (``check_sender``) in this run."""
        return self.memory.sender_verified

    # -- sessions (opening.py, check.py) ---------------------------------------------------

    async def open_session(self) -> SmtpSession:
        """Open a secured, authenticated session (the caller closes it); see :meth:`Opener.open`."""
        return await self._opener.open()

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[SmtpSession]:
        """Open a secured, authenticated session; QUIT on exit.

        Raises:
            SmtpConnectError, SmtpTimeoutError, TlsError, SecurityModeMismatchError,
            StartTlsNotOfferedError, InsecureAuthError, AuthNotSupportedError, AuthenticationError.
        """
        session = await self.open_session()
        try:
            yield session
        finally:
            await session.close()

    async def send(self, message: EmailMessage, recipients: Sequence[str] | None = None) -> SendResult:
        """Open a session, send one message, close. See :meth:`SmtpSession.send`."""
        async with self.connect() as session:
            return await session.send(message, recipients)

    async def check(self, on_step: Callable[[str, str], None] | None = None) -> CheckReport:
        """Connect, authenticate and check the sender without sending; see :func:`.check.check`
        (``on_step`` is told each step as it happens). Never raises for SMTP failures: they are
        in ``report.error`` with ``ok`` false."""
        return await check_connection(self._opener, on_step)
