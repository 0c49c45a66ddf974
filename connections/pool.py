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
from .session import SmtpSession
from .transport import SmtpTransport

__all__ = ["SmtpPool", "Loan", "breaks_session"]

log = logging.getLogger("mailgem.connections")


def breaks_session(exc: SmtpError) -> bool:
    """Whether the session can no longer be used after ``exc`` (RFC 5321 §3.8: 421 closes it)."""
    return isinstance(exc, (SmtpDisconnectedError, SmtpTimeoutError, SmtpConnectError)) or exc.code == 421


class Loan:
    """One borrower's hold on a pooled session (see :meth:`SmtpPool.borrow`)."""

    __slots__ = ("pool", "session", "used", "lent", "returned")

    def __init__(self, pool: SmtpPool, session: SmtpSession, used: int) -> None:
        self.pool, self.session, self.used = pool, session, used
        self.lent = False  # the session (and the borrower's pool slot) went on to the next message
        self.returned = False

    @property
    def last(self) -> bool:
        """This message is the session's last (``max_messages_per_connection``): it closes after it."""
        return self.used + 1 >= self.pool.transport.connection.max_messages_per_connection

    def give_back(self) -> None:
        """Return the session to the pool's idle sessions, counting this message (once)."""
        if not self.returned:
            self.returned = True
            self.pool._idle.append((self.session, self.used + 1))

    def lend(self) -> None:
        """The content is written: the next borrower may start its transaction on this session
        now. A session at its ``max_messages_per_connection`` is not lent: it closes after this one."""
        if self.lent or self.last:
            return
        self.lent = True
        self.give_back()
        assert self.pool._slots is not None
        self.pool._slots.release()


class SmtpPool:
    """Reusable authenticated sessions of one :class:`SmtpTransport`.

    Args:
        transport: the connection to open sessions on.
        size: most sessions open at once (default: the connection's ``pool_size``).
        check_sender: the first session checks that the server takes the connection's sender
            (``MAIL FROM``, ``RCPT TO`` it, ``RSET``: :meth:`SmtpSession.check_sender`) before any
            other session opens, unless this run verified it already: a refused sender then
            costs one session and one ``MAIL FROM``, not one per pool slot (Postfix's
            ``reject_sender_login_mismatch`` accepts every login and refuses every message).
    """

    def __init__(self, transport: SmtpTransport, size: int | None = None, *, check_sender: bool = False) -> None:
        self.transport = transport
        self.size = size or transport.connection.pool_size
        self.check_sender = check_sender
        self._idle: list[tuple[SmtpSession, int]] = []
        self._slots: asyncio.Semaphore | None = None
        self._first_open: asyncio.Lock | None = None
        self.opened = 0
        self._lent_out: list[SmtpSession] = []  # sessions borrowers hold now (one twice while it is lent on)

    def __repr__(self) -> str:
        return f"SmtpPool({self.transport!r}, size={self.size}, idle={len(self._idle)}, opened={self.opened})"

    @contextlib.asynccontextmanager
    async def borrow(self) -> AsyncIterator[Loan]:
        """Borrow a session for one message (opening one if none is idle or usable).

        ``loan.lend`` (pass it to :meth:`SmtpSession.send_bytes`) gives the session to the next
        borrower as soon as this message's content is written, while this one still waits for
        the reply to its final dot: on a pipelining server the next group follows at once
        (RFC 2920 §3.1). A session that breaks afterwards fails both borrowers' waits and is
        closed; each of them retries as after any dropped connection.

        Errors raised while opening (the sender check included) carry ``during_open`` so callers
        can tell an unreachable server or rejected login from a refused message.
        """
        slots = self._loop_state()
        await slots.acquire()
        loan: Loan | None = None
        try:
            session, used = await self._take()
            loan = Loan(self, session, used)
            self._lent_out.append(session)
            yield loan
        except SmtpError as exc:
            if loan is not None:
                if breaks_session(exc):
                    await self._discard(loan.session)
                else:
                    loan.give_back()
            raise
        except BaseException:
            if loan is not None:
                await self._discard(loan.session)
            raise
        else:
            if loan.last:
                await self._discard(loan.session)
            else:
                loan.give_back()
        finally:
            if loan is not None:
                self._lent_out.remove(loan.session)
            if loan is None or not loan.lent:
                slots.release()

    @property
    def serving(self) -> bool:
        """Whether a session of this pool is open and in step now (idle or in use)."""
        return any(s.usable for s in self._lent_out) or any(s.usable for s, _ in self._idle)

    def _loop_state(self) -> asyncio.Semaphore:
        """The pool's slots (made in the event loop that first uses the pool)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
            self._first_open = asyncio.Lock()
        return self._slots

    async def _take(self) -> tuple[SmtpSession, int]:
        """An idle, usable session, or a new one; a session that broke while idle is closed."""
        while self._idle:
            session, used = self._idle.pop()
            if session.usable:
                return session, used
            await self._close(session)
        return await self._open(), 0

    async def _discard(self, session: SmtpSession) -> None:
        self._idle = [(s, n) for s, n in self._idle if s is not session]
        await self._close(session)

    async def _open(self) -> SmtpSession:
        """Open a session; one at a time until the first has opened (see the module docstring)."""
        assert self._first_open is not None
        session = None
        if not self.opened:
            async with self._first_open:
                # Looked at again under the lock: those that waited while the first session
                # opened now open theirs side by side, not one after another.
                if not self.opened:
                    session = await self._open_first()
        if session is None:
            session = await self.transport.open_session()
        self.opened += 1
        return session

    async def _open_first(self) -> SmtpSession:
        """The first session, which checks the sender when asked to (see ``check_sender``)."""
        session = await self.transport.open_session()
        if self.check_sender and not self.transport.sender_verified:
            try:
                await session.check_sender()  # a refusal is remembered: no other session asks
            except SmtpError as exc:
                await session.close()
                raise exc.while_opening() from None  # part of opening this pool's first session
            except BaseException:
                await session.close()
                raise
        return session

    async def probe(self) -> None:
        """Open one session and keep it idle for the next message (a server coming back after an
        outage is asked once, not by every waiting message).

        Raises:
            SmtpError: as when a message opens a session (with ``during_open``).
        """
        async with self._loop_state():
            session = await self._open()
        self._idle.append((session, 0))

    @staticmethod
    async def _close(session: SmtpSession) -> None:
        await session.close()

    async def aclose(self) -> None:
        """QUIT every idle session."""
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._close(s) for s, _ in idle))
