"""Waiting out a server that stops answering in the middle of a run (a restart, a short outage).

Without this, every message in flight would spend its attempts within seconds (backoff from
``retry_initial_s``) and fail, though the server comes back a minute later. Instead, once a
connection that this run has reached refuses or drops new sessions (connection refused or
timed out, no greeting, 421 at connect), messages stop opening sessions of their own: they wait,
without using up their attempts, while one of them at a time asks the server again with
exponential backoff (tenacity), for at most the connection's ``retry_outage_s``; each time it
asks the connections of the chain in order, primary first, so a primary that comes back is used
again. When a session opens, everyone goes on; when the time is up, the waiting messages and
every later one fail with :class:`~mailgem.connections.errors.ServerUnavailableError` and the
reason, without asking the server again. A server that cannot be reached when a run *starts*
(in this process) is not an outage: that is a wrong host, port or firewall, reported at once;
nor is a refused session while others are open (a limit on sessions).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Sequence

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_delay, wait_random_exponential

from .errors import ServerUnavailableError, SmtpConnectError, SmtpDisconnectedError, SmtpError, SmtpTimeoutError
from .gate import Gate
from .pool import SmtpPool

__all__ = ["Outage", "is_unreachable", "PROBE_INITIAL_S", "PROBE_MAX_S"]

log = logging.getLogger("mailgem.connections")

# Backoff between probes of a server that went away, seconds (random exponential, capped).
PROBE_INITIAL_S = 1.0
PROBE_MAX_S = 30.0


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the server is not taking sessions for now: a session could not be
    opened because the connection was refused, dropped or timed out, or the server answered 421
    instead of a greeting (RFC 5321 §3.8). Not a wrong password, certificate or port mode."""
    return (isinstance(exc, (SmtpConnectError, SmtpTimeoutError, SmtpDisconnectedError))
            and bool(getattr(exc, "during_open", False)) and exc.transient)


class Outage:
    """One run's view of its server going away, for one event loop (see the module docstring).

    Args:
        gate: a stop ends every wait at once (the waiting messages are then not started).
    """

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.since: float | None = None  # time.monotonic() when the current outage began
        self.gave_up: ServerUnavailableError | None = None
        self.epoch = 0  # outages ended so far: a waiter whose outage ended meanwhile goes on
        self.back_on = 0  # the connection of the chain that took a session when the last one ended
        self._probe: asyncio.Lock | None = None

    @staticmethod
    def applies(pools: Sequence[SmtpPool]) -> bool:
        """Whether an unreachable server is an outage to wait out: the chain allows waiting
        (``retry_outage_s`` of its primary), none of its connections has a session in step now
        (a 421 while others serve is a limit on sessions, not an outage), and this process
        reached a server before (else it is a wrong host, port or firewall, reported at once)."""
        return (pools[0].transport.connection.retry_outage_s > 0 and not any(p.serving for p in pools)
                and any(p.transport.reached for p in pools))

    async def wait_out(self, pools: Sequence[SmtpPool], cause: SmtpError) -> int | None:
        """Wait until a connection of the chain (primary first, then its fallbacks) takes a
        session again, for at most the primary's ``retry_outage_s`` counted from the first
        failure. Returns the index of that connection in ``pools``, or ``None`` when the gate
        stopped the wait first (the message must not start).

        Raises:
            ServerUnavailableError: no connection came back in time (now or earlier).
            SmtpError: a connection answered but refused (a login, a certificate).
        """
        if self.gave_up is not None:
            raise copy.copy(self.gave_up)
        limit_s = pools[0].transport.connection.retry_outage_s
        if self.since is None:
            self.since = time.monotonic()
            log.warning("connection %s: the server stopped taking sessions (%s); holding messages for up to %g s "
                        "(retry_outage_s) while it is asked again", pools[0].transport.connection.name,
                        cause.message, limit_s)
        epoch = self.epoch
        if self._probe is None:
            self._probe = asyncio.Lock()
        async with self._probe:  # one message at a time asks the server; the others wait here
            if self.epoch != epoch:  # it came back while this one waited for its turn
                return None if self.gate.stopping else self.back_on
            if self.gave_up is not None:
                raise copy.copy(self.gave_up)
            return await self._probe_until_back(pools, limit_s, cause)

    async def _probe_until_back(self, pools: Sequence[SmtpPool], limit_s: float, cause: SmtpError) -> int | None:
        assert self.since is not None
        deadline = self.since + limit_s
        backoff = wait_random_exponential(multiplier=PROBE_INITIAL_S, max=PROBE_MAX_S)

        def wait(state: RetryCallState) -> float:  # never past the deadline
            return max(0.0, min(backoff(state), deadline - time.monotonic()))

        retrying = AsyncRetrying(retry=retry_if_exception(is_unreachable),
                                 stop=stop_after_delay(max(0.0, deadline - time.monotonic())),
                                 wait=wait, sleep=self.gate.pause, reraise=True)
        last: SmtpError = cause
        try:
            async for attempt in retrying:
                with attempt:
                    if self.gate.stopping:
                        return None
                    index = await self._probe_chain(pools)
        except SmtpError as exc:
            if not is_unreachable(exc):
                raise  # a server answers now, but refuses: that message's own failure
            last = exc
        else:
            log.info("connection %s: takes sessions again after %.1f s", pools[index].transport.connection.name,
                     time.monotonic() - self.since)
            self.since, self.epoch, self.back_on = None, self.epoch + 1, index
            return index
        if self.gate.stopping:
            return None
        waited = time.monotonic() - self.since
        c = pools[0].transport.connection
        self.gave_up = ServerUnavailableError(
            f"not sent: the server stopped taking sessions and did not come back within {waited:.0f} s "
            f"(retry_outage_s {limit_s:g}); last: {last.message}", host=c.host, port=c.port)
        log.error("connection %s: %s", c.name, self.gave_up.message)
        raise copy.copy(self.gave_up)

    @staticmethod
    async def _probe_chain(pools: Sequence[SmtpPool]) -> int:
        """Open one session on the first connection of the chain that takes one (it is kept for
        the next message); the index of that connection.

        Raises:
            SmtpError: the last connection's failure, when none took a session.
        """
        for index, pool in enumerate(pools):
            try:
                await pool.probe()
            except SmtpError:
                if index + 1 == len(pools):
                    raise
                continue
            return index
        raise AssertionError("a chain has at least one connection")
