"""The connection test (``mailgem connection test``, the "Test connection" button): open a session,
check the sender, send nothing, and say what the server offers.

The sender check is ``MAIL FROM`` and ``RCPT TO`` the connection's sender, then ``RSET``
(:meth:`SmtpSession.check_sender`), then ``NOOP`` and ``QUIT``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiosmtplib

from .errors import SenderRefusedError, SmtpError
from .translate import from_aiosmtplib
from .opening import Offer, Opener

__all__ = ["CheckReport", "check"]


@dataclass
class CheckReport:
    """Diagnostics for the "Test connection" button.

    Attributes:
        ok: connected, TLS as required, authenticated (unless anonymous), the sender not
            refused and NOOP answered 250.
        banner: the server's greeting (220 reply text).
        extensions: EHLO extensions after TLS, ``{keyword: parameters}``.
        tls_version, cipher: negotiated TLS protocol and cipher suite, ``None`` for plain SMTP.
        auth_mechanisms: AUTH mechanisms the server offers.
        size_limit_bytes: the SIZE the server advertises (RFC 1870), ``None`` when absent or 0.
        authenticated: whether AUTH succeeded (``False`` for anonymous connections).
        sender: the connection's sender; ``sender_accepted`` whether ``MAIL FROM`` and
            ``RCPT TO`` it were accepted (``None``: not checked); ``sender_note`` what the
            server said when only the ``RCPT TO`` was refused for reasons of its own.
        elapsed_s: time taken, seconds.
        error: the typed error when ``ok`` is false.
        options: the connection's options that change what is sent (``name: value``), e.g.
            ``allowed_special_domains``.
    """

    host: str
    port: int
    security: str
    ok: bool = False
    banner: str | None = None
    extensions: dict[str, str] = field(default_factory=dict)
    tls_version: str | None = None
    cipher: str | None = None
    auth_mechanisms: list[str] = field(default_factory=list)
    size_limit_bytes: int | None = None
    authenticated: bool = False
    sender: str | None = None
    sender_accepted: bool | None = None
    sender_note: str | None = None
    elapsed_s: float = 0.0
    error: SmtpError | None = None
    options: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable lines, one fact each."""
        out = [
            f"server      {self.host}:{self.port} ({self.security})",
            f"result      {'OK' if self.ok else 'FAILED'} in {self.elapsed_s:.2f} s",
        ]
        if self.banner is not None:
            out.append(f"banner      {self.banner}")
        if self.tls_version:
            out.append(f"tls         {self.tls_version} {self.cipher}")
        if self.extensions:
            out.append("extensions  " + ", ".join(f"{k.upper()} {v}".strip() for k, v in sorted(self.extensions.items())))
        out.append("auth        " + (", ".join(self.auth_mechanisms) or "(not offered)")
                   + (" - authenticated" if self.authenticated else ""))
        out.append("size limit  " + (f"{self.size_limit_bytes:,} bytes" if self.size_limit_bytes else "(none advertised)"))
        if self.sender_accepted is not None:
            verdict = "sender accepted" if self.sender_accepted else "sender refused"
            note = f" (RCPT TO it was refused: {self.sender_note})" if self.sender_note else ""
            out.append(f"sender      <{self.sender}>: {verdict} (MAIL FROM, RCPT TO, RSET; nothing sent){note}")
        out += [f"option      {option}" for option in self.options]
        if self.error is not None:
            out.append(f"error       {self.error}")
        return out

    def note(self, offer: Offer) -> None:
        """Take what the server showed while the session opened."""
        self.banner, self.tls_version, self.cipher = offer.banner, offer.tls_version, offer.cipher
        self.extensions, self.auth_mechanisms = offer.extensions, offer.auth_mechanisms
        self.size_limit_bytes, self.authenticated = offer.size_limit_bytes, offer.authenticated


async def check(opener: Opener, on_step: Callable[[str, str], None] | None = None) -> CheckReport:
    """Connect, authenticate and check the sender without sending; report what the server offers.

    Never raises for SMTP failures: they are in ``report.error`` with ``ok`` false.

    Args:
        on_step: told each step as it happens, ``(step, line)``: ``connect``, ``tls``, ``ehlo``,
            ``size``, ``auth``, ``sender`` (see :meth:`Offer.tell`).

    Raises:
        MailgemError: the connection was set up for a preview (no secret).
    """
    c = opener.connection
    report = CheckReport(host=c.host, port=c.port, security=c.security, sender=c.sender, options=c.options())
    offer = Offer(on_step=on_step)
    started = time.perf_counter()
    try:
        try:
            session = await opener.open(offer)
        finally:
            report.note(offer)  # as far as it got: a refused login still shows what was offered
        try:
            try:
                note = await session.check_sender()
            except SenderRefusedError:
                report.sender_accepted = False
                offer.tell("sender", f"<{c.sender}>: sender refused")
                raise
            report.sender_accepted = True
            report.sender_note = str(note) if note else None
            offer.tell("sender", f"<{c.sender}>: sender accepted (MAIL FROM, RCPT TO, RSET; nothing sent)")
            report.ok = await session.noop() == 250
        finally:
            await session.close()
    except SmtpError as exc:
        report.error = exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        report.error = from_aiosmtplib(exc, stage="noop", host=c.host, port=c.port)
    report.elapsed_s = time.perf_counter() - started
    return report
