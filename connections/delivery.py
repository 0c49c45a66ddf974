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
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol, runtime_checkable

from tenacity import RetryCallState

from .errors import AuthenticationError, ContentWithheldError, MailgemError, SmtpConnectError, SmtpError, SmtpResponseError, SmtpTimeoutError, TlsError
from .gate import OPEN, Gate
from .identity import SenderIdentity
from .outage import Outage, is_unreachable
from .pool import SmtpPool
from .ratelimit import DailyLimitReached, RateLimiter, limiter_for
from .retry import RetryPolicy
from .transport import RecipientRefusal, SendResult, SmtpTransport

__all__ = ["Deliverer", "Delivery", "Prepared"]

log = logging.getLogger("mailgem.connections")


@runtime_checkable
class Prepared(Protocol):
    """A message already rendered to bytes except for the connection's identity (the From line)."""

    def bytes_for(self, identity: SenderIdentity, *, utf8: bool = False) -> bytes: ...

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


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _falls_back(exc: SmtpError) -> bool:
    """Whether a fallback connection may get past ``exc``: a session could not be opened (the
    server unreachable, the login or TLS refused), not a refused message."""
    return exc.during_open and isinstance(exc, (SmtpConnectError, SmtpTimeoutError, AuthenticationError, TlsError))


class _Message:
    """One message on its way through its attempts: what :meth:`Deliverer.send` keeps between them."""

    __slots__ = ("message", "gate", "envelope_id", "policy", "pending", "accepted", "refused", "last", "attempts",
                 "maybe_delivered", "last_error", "data")

    def __init__(self, message: EmailMessage | Prepared, recipients: Sequence[str], gate: Gate,
                 envelope_id: str | None, policy: RetryPolicy) -> None:
        self.message = message
        self.gate = gate
        self.envelope_id = envelope_id
        self.policy = policy  # the connection's in use when the message started
        self.pending = list(dict.fromkeys(recipients))  # recipients still to send to
        self.accepted: list[str] = []
        self.refused: dict[str, RecipientRefusal] = {}
        self.last: SendResult | None = None  # the last attempt's result, when the server took the content
        self.attempts = 0
        self.maybe_delivered = False
        self.last_error: SmtpError | None = None  # the last attempt's failure from the server (not a stop's)
        self.data: dict[int, tuple[bytes, bool]] = {}  # the message as sent through each pool, and utf8


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
        self.policies = [RetryPolicy(t.connection) for t in transports]
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
        object with ``bytes_for(identity)`` (the connection's :class:`SenderIdentity`) and a
        ``Message-ID`` item (a prepared message, :class:`Prepared`).

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
        message_id = str(message["Message-ID"]) if message["Message-ID"] else None
        m = _Message(message, recipients, self.gate if gate is None else gate, envelope_id, self.policies[self._active])
        try:
            await self._attempts(m)
        except DailyLimitReached as exc:
            return Delivery("deferred", None, exc, m.attempts, self.connection, message_id, _now())
        except _NotStarted:
            if not m.accepted:
                return self._not_started(m, message_id)
            self._stopped_before_retry(m)
        except Exception as exc:  # noqa: BLE001 - one message's problem is that message's outcome
            error = exc if isinstance(exc, SmtpError) else SmtpResponseError(
                f"could not send the message: {type(exc).__name__}: {exc}", transient=False)
            if not m.accepted:
                return Delivery("failed", None, error, m.attempts, self.connection, message_id, _now(),
                                m.maybe_delivered)
            # Accepted for some recipients before a later attempt failed: never resend to them.
            m.refused.update({r: RecipientRefusal(error.code or 451, error.server_message or error.message,
                                                  error.enhanced_status) for r in m.pending})
        last = m.last
        assert last is not None
        result = SendResult(tuple(m.accepted), m.refused, last.code, last.message, last.enhanced_status,
                            message_id or last.message_id, last.size_bytes)
        return Delivery("partial" if m.refused else "sent", result, None, m.attempts, self.connection,
                        result.message_id, _now(), m.maybe_delivered)

    def _not_started(self, m: _Message, message_id: str | None) -> Delivery:
        """The outcome of a message stopped before the server accepted it for anyone."""
        if m.maybe_delivered and m.last_error is not None:
            # An earlier attempt lost its connection after the content: the server may hold it.
            return Delivery("failed", None, m.last_error, m.attempts, self.connection, message_id, _now(), True)
        return Delivery("not_started", None, None, 0, self.connection, message_id, _now())

    @staticmethod
    def _stopped_before_retry(m: _Message) -> None:
        """Stopped before retrying the recipients the server refused for now: the others have the
        message, so it is partial (never sent again to them); those keep their refusal."""
        assert m.last is not None
        for r in m.pending:
            why = m.last.refused[r]
            m.refused[r] = RecipientRefusal(why.code, f"{why.message} (not retried: the run stopped)",
                                            why.enhanced_status)

    async def _attempts(self, m: _Message) -> None:
        """Attempt ``m`` until it is settled: the first attempt without any retry machinery, the
        others as its :class:`RetryPolicy` says (one policy: what is retried, how often, how long
        apart; every wait goes through the gate's ``pause``)."""
        state: RetryCallState | None = None
        while True:
            try:
                return await self._attempt(m)
            except _NoRetry:
                # Recipients refused for now while others were accepted keep their refusal;
                # otherwise the last attempt's failure (nothing accepted: it came from the server).
                if m.accepted or m.last_error is None:
                    raise _NotStarted("not retried: the run stopped") from None
                raise m.last_error from None
            except SmtpError as exc:
                state = m.policy.failed(exc, state)
                backoff_s = m.policy.backoff_s(state)
                if backoff_s is None:
                    raise
                log.info("attempt %d failed (%s); retrying", state.attempt_number, exc)
                await m.gate.pause(backoff_s)  # a stop ends the backoff at once

    async def _attempt(self, m: _Message) -> None:
        """One attempt through the connection in use; its result is added to ``m``.

        Raises:
            _NoRetry: the gate is stopping and this would be a retry.
            _TransientRecipients: some recipients were refused for now (retried alone).
            SmtpError: the attempt failed (made transient when a fallback takes over).
        """
        if m.attempts and m.gate.stopping:
            raise _NoRetry  # stopped between attempts: the last failure stands
        m.attempts += 1
        index = self._active
        self._data_for(m, index)  # flattened before the wait for a slot
        await self.limiters[index].acquire(m.gate.pause)
        try:
            result = await self._through_outage(index, m)
        except _NotStarted:
            raise
        except SmtpError as exc:
            error = self._fall_back(index, exc)
            m.last_error = error
            m.maybe_delivered = m.maybe_delivered or error.maybe_delivered
            if error is exc:
                raise
            raise error from exc
        m.last = result
        m.accepted.extend(result.accepted)
        transient = {r: v for r, v in result.refused.items() if v.transient}
        m.refused.update({r: v for r, v in result.refused.items() if not v.transient})
        if transient and m.attempts < m.policy.max_attempts:
            m.pending = list(transient)
            raise _TransientRecipients(f"{len(transient)} recipient(s) refused temporarily",
                                       code=next(iter(transient.values())).code)
        m.refused.update(transient)

    def _fall_back(self, index: int, exc: SmtpError) -> SmtpError:
        """After ``exc`` on connection ``index``: when a fallback may get past it, make the next
        connection of the chain the one in use and return a transient error of the same kind (so
        the message is retried there); else ``exc``."""
        if not (_falls_back(exc) and index + 1 < len(self.pools)):
            return exc
        self._active = index + 1
        log.warning("connection %s failed (%s); falling back to %s", self.pools[index].transport.connection.name,
                    exc.message, self.connection)
        return exc.replace(transient=True)

    def _data_for(self, m: _Message, index: int) -> tuple[bytes, bool]:
        """The message as sent through ``self.pools[index]`` (with that connection's identity),
        and whether it needs SMTPUTF8; flattened once a connection."""
        data = m.data.get(index)
        if data is None:
            identity = self.pools[index].transport.identity
            utf8 = identity.needs_smtputf8(m.pending)  # UTF-8 headers go with SMTPUTF8 (RFC 6532)
            message = m.message
            # Not isinstance(message, Prepared): a runtime protocol check costs more than building a header.
            raw = (identity.flatten(message, utf8=utf8) if isinstance(message, EmailMessage)
                   else message.bytes_for(identity, utf8=utf8))
            data = m.data[index] = raw, utf8
        return data

    async def _send_once(self, m: _Message, index: int) -> SendResult:
        """Borrow a session of pool ``index`` and send ``m`` to its pending recipients, if the gate allows.

        Raises:
            _NotStarted: the gate said no (before anything was written, or before the content).
        """
        data, utf8 = self._data_for(m, index)
        gate = m.gate
        try:
            async with self.pools[index].borrow() as loan:
                if (m.attempts == 1 and (gate.stopping or not gate.may_start())) or not gate.may_write():
                    raise _NotStarted("not started: the run is stopping")
                return await loan.session.send_bytes(data, m.pending, message_id=str(m.message["Message-ID"]),
                                                      smtputf8=utf8, lend=loan.lend, envelope_id=m.envelope_id,
                                                      gate=gate)
        except ContentWithheldError as exc:  # the pool has closed that session; nothing was delivered
            raise _NotStarted(exc.message) from None

    async def _through_outage(self, index: int, m: _Message) -> SendResult:
        """:meth:`_send_once`; once more when the session broke under an earlier message, and
        again after waiting out an outage of the server (:mod:`.outage`), neither of which
        counts as one of the message's attempts."""
        again_on_new_session = True
        while True:
            try:
                if self.outage.gave_up is not None and self._waits_out(index):
                    raise copy.copy(self.outage.gave_up)  # the rest fail with the reason, without asking again
                return await self._send_once(m, index)
            except SmtpError as exc:
                if exc.inherited and again_on_new_session:
                    again_on_new_session = False  # once: it never reached the server's DATA
                    log.info("the session broke under an earlier message (%s); sending again on another", exc.message)
                    continue
                if not (is_unreachable(exc) and self._waits_out(index)):
                    raise
                back_on = await self.outage.wait_out(self.pools, exc)
                if back_on is None:
                    if m.attempts == 1:
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
