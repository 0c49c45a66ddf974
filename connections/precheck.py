"""Checking a connection and its fallbacks before a run sends anything.

One session per connection of the chain, until one passes the checks of ``mailgem connection
test`` (:meth:`SmtpTransport.check`: connect, TLS, AUTH, the sender accepted at ``MAIL FROM``
and ``RCPT TO``, then ``RSET`` and ``QUIT``; nothing is sent). What it learns stays with the
transports for the rest of the run, on the driver and (pickled) on Spark executors: a permanent
refusal is never asked again, and a sender the server took is not checked again. A primary that
fails while a fallback passes is a warning, not an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import SmtpError
from .transport import CheckReport, SmtpTransport

__all__ = ["ChainCheck", "check_chain"]


@dataclass(frozen=True)
class ChainCheck:
    """What :func:`check_chain` found: one :class:`CheckReport` per connection tried, in order."""

    reports: tuple[CheckReport, ...]
    names: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Some connection of the chain passed: the run can send."""
        return any(r.ok for r in self.reports)

    @property
    def size_limit_bytes(self) -> int | None:
        """The SIZE (RFC 1870) of the first connection that passed, bytes; ``None`` when none did
        or it advertises none."""
        return next((r.size_limit_bytes for r in self.reports if r.ok), None)

    @property
    def error(self) -> SmtpError | None:
        """The primary connection's failure when no connection passed."""
        if self.ok or not self.reports:
            return None
        return self.reports[0].error

    def warnings(self) -> list[str]:
        """One line for each connection that failed before the one that passed."""
        if not self.ok:
            return []
        passed = next(i for i, r in enumerate(self.reports) if r.ok)
        return [f"connection {self.names[i]!r} failed its check ({self.reports[i].error}); sending through its "
                f"fallback {self.names[passed]!r}" for i in range(passed)]


async def check_chain(transports: Sequence[SmtpTransport]) -> ChainCheck:
    """Check each transport of the chain (primary, then fallbacks) until one passes; see the
    module docstring. Never raises for SMTP failures: they are in the reports."""
    reports: list[CheckReport] = []
    for transport in transports:
        report = await transport.check()
        reports.append(report)
        if report.ok:
            break
    return ChainCheck(tuple(reports), tuple(t.connection.name for t in transports[:len(reports)]))
