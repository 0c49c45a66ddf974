"""Deliver messages with pooling, rate limits, retries and an optional fallback connection.

Retries (tenacity: exponential backoff with full jitter) are for transient failures only:
4xx replies, dropped connections and timeouts. A 5xx is never retried (RFC 5321 §4.2.1: "do
not repeat the exact request"). When some recipients are refused with 4xx while others are
accepted, only those recipients are retried, with the same Message-ID.

The one duplicate window: the server accepted the message but its reply to the end of DATA was
lost (dropped connection or timeout). The message is retried and the server receives it twice;
both copies carry the same Message-ID, which mail clients such as Gmail use to collapse them.
Such a message is marked ``maybe_delivered`` when no later attempt settles it.

Any other exception while sending one message (a value the SMTP client cannot encode, a bug)
is that message's ``failed`` outcome, never the end of the run.

A server that stops taking sessions in the middle of a run is waited out (bounded by the
connection's ``retry_outage_s``, :mod:`.outage`) instead of failing every message in flight. A
:class:`~mailgem.connections.gate.Gate` that is stopping starts no new message and no retry,
and ends every wait (backoff, rate limit, outage); messages whose transaction began finish.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from email.message import EmailMessage

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from .errors import AuthenticationError, ContentWithheldError, MailgemError, SmtpConnectError, SmtpError, SmtpResponseError, SmtpTimeoutError, TlsError
from .gate import OPEN, Gate
from .outage import Outage, is_unreachable
from .pool import SmtpPool
from .ratelimit import DailyLimitReached, RateLimiter, limiter_for
from .transport import RecipientRefusal, SendResult, SmtpTransport

__all__ = ["Deliverer", "Delivery", "Prepared"]

log = logging.getLogger("mailgem.connections")


@runtime_checkable
class Prepared(Protocol):
    """A message already rendered to bytes except for the connection's identity."""

    def bytes_for(self, transport: SmtpTransport, *, utf8: bool = False) -> bytes: ...

    def __getitem__(self, name: str) -> str | None: ...


class _NotStarted(SmtpError):
    """The caller said not to start this message (see :meth:`Deliverer.send`); an SmtpError
    that does not break the session, so the pool keeps it."""

    default_transient = False


class _NoRetry(Exception):
    """The gate stopped between a message's attempts: its last failure is its outcome."""


class _TransientRecipients(SmtpError):
    """Some recipients were refused with 4xx; retried alone."""

    default_transient = True


@dataclass
class Delivery:
    """The outcome of one message after every attempt.

    Attributes:
        status: ``sent`` (all accepted), ``partial`` (some refused), ``failed``, ``deferred``
            (not tried: daily limit reached), ``not_started`` (the caller stopped it first, or
            the gate stopped while it waited for a session).
        result: the server's answer (accepted and refused recipients) when anything was accepted.
        error: the last error when nothing was accepted.
        attempts: attempts made (1 = no retry).
        connection: name of the connection that carried it (the fallback's when used).
        message_id: the message's ``Message-ID``.
        maybe_delivered: an attempt lost its connection after the content was sent, so the
            server may hold a copy even though ``status`` is ``failed``.
    """

    status: str
    result: SendResult | None
    error: MailgemError | None
    attempts: int
    connection: str
    message_id: str | None
    finished_at: dt.datetime
    maybe_delivered: bool = False


def _falls_back(exc: BaseException) -> bool:
    return bool(getattr(exc, "during_open", False)) and isinstance(
        exc, (SmtpConnectError, SmtpTimeoutError, AuthenticationError, TlsError))


class Deliverer:
    """Send messages through a connection (and its fallback) with a shared pool and limiter.

    Args:
        transports: the primary transport, then fallbacks in order.
        rate_share: this process's share of the connections' rate limits (Spark workers).
        gate: asked before each message and each retry, and waited through (see the module
            docstring); default: never stops.
        check_sender: each connection's first session checks the sender before any other opens
            (see :class:`SmtpPool`), unless this run verified it already.

    Use within one event loop; call :meth:`aclose` at the end.
    """

    def __init__(self, transports: Sequence[SmtpTransport], *, rate_share: float = 1.0, gate: Gate = OPEN,
                 check_sender: bool = False) -> None:
        if not transports:
            raise ValueError("at least one transport is needed")
        self.pools = [SmtpPool(t, check_sender=check_sender) for t in transports]
        self.limiters: list[RateLimiter] = [limiter_for(t.connection, rate_share) for t in transports]
        self.gate = gate
        self.outage = Outage(gate)
        self._active = 0

    @property
    def in_flight(self) -> int:
        """How many messages to keep in flight for the pools to stay busy: the primary pool's
        size, three times that when the connection pipelines (each session then carries a
        message waiting for its final reply and the next one's group, see :meth:`SmtpPool.borrow`,
        and one more waits to write its group the moment a session is lent, so the group
        leaves with the content before it: one write a message)."""
        pool = self.pools[0]
        return pool.size * (3 if pool.transport.connection.pipelining else 1)

    @property
    def connection(self) -> str:
        """Name of the connection currently used."""
        return self.pools[self._active].transport.connection.name

    async def send(self, message: EmailMessage | Prepared, recipients: Sequence[str], *,
                   gate: Gate | None = None, envelope_id: str | None = None) -> Delivery:
        """Deliver ``message`` to ``recipients``; never raises for SMTP failures (see :class:`Delivery`).

        ``message`` is an ``EmailMessage`` (flattened with each connection's identity) or any
        object with ``bytes_for(transport)`` and a ``Message-ID`` item (a prepared message).

        ``gate``: this message's :class:`~mailgem.connections.gate.Gate` (default: the
        deliverer's). ``may_start()`` is asked once a session is free for the first attempt,
        before anything of the message is written; ``may_write()`` before *every* attempt,
        retries included, and once more when the server is ready for the content (see
        :meth:`SmtpSession.send_bytes`). Either ``False`` gives status ``not_started``, however
        many attempts went before, so a pause between a message's commands and its content does
        not deliver it either.

        ``envelope_id``: the RFC 3461 ``ENVID`` for connections with ``dsn``.

        While the gate is stopping, the message does not start (``not_started``),
        and a message that failed an attempt is not retried (its last failure is its outcome).
        """
        conn = self.pools[self._active].transport.connection
        pending = list(dict.fromkeys(recipients))
        accepted: list[str] = []
        refused: dict[str, RecipientRefusal] = {}
        last: SendResult | None = None
        attempts = 0
        maybe_delivered = False
        data_by_pool: dict[int, tuple[bytes, bool]] = {}

        gate = self.gate if gate is None else gate
        last_error: SmtpError | None = None  # the last attempt's failure from the server (not a stop's)

        def data_for(index: int) -> tuple[bytes, bool]:
            """The message as sent through ``self.pools[index]``, with that connection's identity."""
            if index not in data_by_pool:
                transport = self.pools[index].transport
                utf8 = transport.needs_smtputf8(pending)  # UTF-8 headers go with SMTPUTF8 (RFC 6532)
                # Not isinstance(message, Prepared): a runtime protocol check costs more than building a header.
                data = (transport.flatten(message, utf8=utf8) if isinstance(message, EmailMessage)
                        else message.bytes_for(transport, utf8=utf8))
                data_by_pool[index] = data, utf8
            return data_by_pool[index]

        async def send_once(index: int) -> SendResult:
            data, utf8 = data_for(index)
            try:
                async with self.pools[index].borrow() as loan:
                    if (attempts == 1 and (gate.stopping or not gate.may_start())) or not gate.may_write():
                        raise _NotStarted("not started: the run is stopping")
                    return await loan.session.send_bytes(data, pending, message_id=str(message["Message-ID"]),
                                                          smtputf8=utf8, lend=loan.lend, envelope_id=envelope_id,
                                                          gate=gate)
            except ContentWithheldError as exc:  # the pool has closed that session; nothing was delivered
                raise _NotStarted(exc.message) from None

        async def attempt() -> None:
            nonlocal pending, last, attempts, maybe_delivered, last_error
            if attempts and gate.stopping:
                raise _NoRetry  # stopped between attempts: the last failure stands
            attempts += 1
            index = self._active
            pool = self.pools[index]
            data_for(index)  # flattened before the wait for a slot
            await self.limiters[index].acquire(gate.pause)
            try:
                result = await self._through_outage(index, send_once, first_attempt=attempts == 1)
            except _NotStarted:
                raise
            except SmtpError as exc:
                last_error = exc
                maybe_delivered = maybe_delivered or exc.maybe_delivered
                if _falls_back(exc) and index + 1 < len(self.pools):
                    self._active = index + 1
                    log.warning("connection %s failed (%s); falling back to %s", pool.transport.connection.name,
                                exc.message, self.connection)
                    exc.transient = True  # retry at once on the fallback
                raise
            last = result
            accepted.extend(result.accepted)
            transient = {r: v for r, v in result.refused.items() if v.transient}
            refused.update({r: v for r, v in result.refused.items() if not v.transient})
            if transient and attempts < conn.max_attempts:
                pending = list(transient)
                raise _TransientRecipients(f"{len(transient)} recipient(s) refused temporarily", code=next(iter(transient.values())).code)
            refused.update(transient)

        now = lambda: dt.datetime.now(dt.UTC).replace(tzinfo=None)  # noqa: E731
        message_id = str(message["Message-ID"]) if message["Message-ID"] else None
        try:
            try:
                await attempt()  # most messages succeed first time: no retry bookkeeping for them
            except _NotStarted:
                raise
            except SmtpError as exc:
                first, replayed = exc, False  # a plain name: the closure below outlives `except ... as`

                async def again() -> None:
                    # tenacity's loop starts by replaying the first failure, so its retry
                    # predicate, backoff and attempt count apply exactly as if it had made it.
                    nonlocal replayed
                    if not replayed:
                        replayed = True
                        raise first
                    await attempt()

                retrying = AsyncRetrying(  # built only when a message needs it
                    retry=retry_if_exception(lambda e: isinstance(e, SmtpError) and e.transient),
                    stop=stop_after_attempt(conn.max_attempts),
                    wait=wait_random_exponential(multiplier=conn.retry_initial_s, max=conn.retry_max_s),
                    sleep=gate.pause,  # a stop ends the backoff at once
                    before_sleep=lambda state: log.info(
                        "attempt %d failed (%s); retrying", state.attempt_number,
                        state.outcome.exception() if state.outcome else "?"),
                    reraise=True,
                )
                try:
                    await retrying(again)
                except _NoRetry:
                    # Recipients refused for now while others were accepted keep their refusal;
                    # otherwise the last attempt's failure (nothing accepted: it came from the server).
                    if accepted or last_error is None:
                        raise _NotStarted("not retried: the run stopped") from None
                    raise last_error from None
        except DailyLimitReached as exc:
            return Delivery("deferred", None, exc, attempts, self.connection, message_id, now())
        except _NotStarted:
            if not accepted and maybe_delivered and last_error is not None:
                # An earlier attempt lost its connection after the content: the server may hold it.
                return Delivery("failed", None, last_error, attempts, self.connection, message_id, now(), True)
            if not accepted:
                return Delivery("not_started", None, None, 0, self.connection, message_id, now())
            # Stopped before retrying the recipients the server refused for now: the others have
            # it, so the message is partial (never sent again to them); those keep their refusal.
            assert last is not None
            for r in pending:
                why = last.refused[r]
                refused[r] = RecipientRefusal(why.code, f"{why.message} (not retried: the run stopped)", why.enhanced_status)
        except Exception as exc:  # noqa: BLE001 - one message's problem is that message's outcome
            error = exc if isinstance(exc, SmtpError) else SmtpResponseError(
                f"could not send the message: {type(exc).__name__}: {exc}", transient=False)
            if accepted:
                # Accepted for some recipients before a later attempt failed: never resend to them.
                for r in pending:
                    refused[r] = RecipientRefusal(error.code or 451, error.server_message or error.message,
                                                  error.enhanced_status)
            else:
                return Delivery("failed", None, error, attempts, self.connection, message_id, now(), maybe_delivered)
        assert last is not None
        result = SendResult(tuple(accepted), refused, last.code, last.message, last.enhanced_status,
                            message_id or last.message_id, last.size_bytes)
        return Delivery("partial" if refused else "sent", result, None, attempts, self.connection,
                        result.message_id, now(), maybe_delivered)

    async def _through_outage(self, index: int, send_once: Callable[[int], Awaitable[SendResult]], *,
                              first_attempt: bool) -> SendResult:
        """``send_once(index)``; once more when the session broke under an earlier message, and
        again after waiting out an outage of the server (:mod:`.outage`), neither of which
        counts as one of the message's attempts."""
        again_on_new_session = True
        while True:
            try:
                if self.outage.gave_up is not None and self._waits_out(index):
                    raise copy.copy(self.outage.gave_up)  # the rest fail with the reason, without asking again
                return await send_once(index)
            except SmtpError as exc:
                if exc.inherited and again_on_new_session:
                    again_on_new_session = False  # once: it never reached the server's DATA
                    log.info("the session broke under an earlier message (%s); sending again on another", exc.message)
                    continue
                if not (is_unreachable(exc) and self._waits_out(index)):
                    raise
                back_on = await self.outage.wait_out(self.pools, exc)
                if back_on is None:
                    if first_attempt:
                        raise _NotStarted("not started: the run stopped while the server was away") from None
                    raise _NoRetry from None
                self._active = index = back_on  # the primary again, when it was the one back

    def _waits_out(self, index: int) -> bool:
        """Whether an unreachable server is waited out now: ``index`` is the last connection of
        the chain (a fallback is tried first), and :meth:`Outage.applies`."""
        return index + 1 >= len(self.pools) and self.outage.applies(self.pools)

    async def aclose(self) -> None:
        """Close every pool's idle sessions."""
        for pool in self.pools:
            await pool.aclose()
