"""A pool of authenticated aiosmtplib sessions for one connection (aiosmtplib has none, issue #45).

At most ``pool_size`` sessions are open at once; each is reused for up to
``max_messages_per_connection`` messages, then closed (servers limit messages per session).
A session that broke (dropped, timed out, 421 "closing") is discarded and the next message
opens a new one. Until one session of the transport has opened, sessions open one at a time:
a wrong password or a wrong port then costs the server one attempt, not one per pool slot
(the transport remembers a permanent refusal, so the waiting ones never ask). Pools belong to
one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from .errors import SmtpConnectError, SmtpDisconnectedError, SmtpError, SmtpTimeoutError
from .transport import SmtpSession, SmtpTransport

__all__ = ["SmtpPool", "breaks_session"]

log = logging.getLogger("mailgem.connections")


def breaks_session(exc: SmtpError) -> bool:
    """Whether the session can no longer be used after ``exc`` (RFC 5321 §3.8: 421 closes it)."""
    return isinstance(exc, (SmtpDisconnectedError, SmtpTimeoutError, SmtpConnectError)) or exc.code == 421


class SmtpPool:
    """Reusable authenticated sessions of one :class:`SmtpTransport`.

    Args:
        transport: the connection to open sessions on.
        size: most sessions open at once (default: the connection's ``pool_size``).
    """

    def __init__(self, transport: SmtpTransport, size: int | None = None) -> None:
        self.transport = transport
        self.size = size or transport.connection.pool_size
        self._idle: list[tuple[SmtpSession, int]] = []
        self._slots: asyncio.Semaphore | None = None
        self._first_open: asyncio.Lock | None = None
        self.opened = 0

    def __repr__(self) -> str:
        return f"SmtpPool({self.transport!r}, size={self.size}, idle={len(self._idle)}, opened={self.opened})"

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[SmtpSession]:
        """Borrow a session (opening one if none is idle).

        Errors raised while opening carry ``during_open = True`` so callers can tell an
        unreachable server or rejected login from a refused message.
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
            self._first_open = asyncio.Lock()
        async with self._slots:
            if self._idle:
                session, used = self._idle.pop()
            else:
                session = await self._open()
                used = 0
            try:
                yield session
            except SmtpError as exc:
                if breaks_session(exc):
                    await self._close(session)
                else:
                    self._idle.append((session, used + 1))
                raise
            except BaseException:
                await self._close(session)
                raise
            else:
                if used + 1 >= self.transport.connection.max_messages_per_connection:
                    await self._close(session)
                else:
                    self._idle.append((session, used + 1))

    async def _open(self) -> SmtpSession:
        """Open a session; one at a time until the first has opened (see the module docstring)."""
        assert self._first_open is not None
        try:
            if self.opened:
                session = await self.transport._open()
            else:
                async with self._first_open:
                    session = await self.transport._open()
        except SmtpError as exc:
            exc.during_open = True  # type: ignore[attr-defined]
            raise
        self.opened += 1
        return session

    @staticmethod
    async def _close(session: SmtpSession) -> None:
        await session.close()

    async def aclose(self) -> None:
        """QUIT every idle session."""
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._close(s) for s, _ in idle))
