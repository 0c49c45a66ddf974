"""Waiting out a server that stops answering in the middle of a run (a restart, a short outage).

Without this, every message in flight would spend its attempts within seconds (backoff from
``retry_initial_s``) and fail, though the server comes back a minute later. Instead, once a
connection that this run has reached refuses or drops new sessions (connection refused or
timed out, no greeting, 421 at connect), messages stop opening sessions of their own: they wait,
without using up their attempts, while one of them at a time asks the server again with
exponential backoff (tenacity), for at most the connection's ``retry_outage_s``. When a session
opens, everyone goes on; when the time is up, the waiting messages and every later one fail with
:class:`~mailgem.connections.errors.ServerUnavailableError` and the reason, without asking the
server again. A server that cannot be reached when a run *starts* is not an outage: that is a
wrong host, port or firewall, reported at once.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time

from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_random_exponential

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
        self._probe: asyncio.Lock | None = None

    async def wait_out(self, pool: SmtpPool, cause: SmtpError) -> bool:
        """Wait until ``pool``'s server takes a session again, bounded by its connection's
        ``retry_outage_s`` counted from the first failure. Returns ``False`` when the gate
        stopped the wait first (the message must not start).

        Raises:
            ServerUnavailableError: the server did not come back in time (now or earlier).
        """
        limit_s = pool.transport.connection.retry_outage_s
        if self.gave_up is not None:
            raise copy.copy(self.gave_up)
        if self.since is None:
            self.since = time.monotonic()
            log.warning("connection %s: the server stopped taking sessions (%s); holding messages for up to %g s "
                        "(retry_outage_s) while it is asked again", pool.transport.connection.name, cause.message,
                        limit_s)
        epoch = self.epoch
        if self._probe is None:
            self._probe = asyncio.Lock()
        async with self._probe:  # one message at a time asks the server; the others wait here
            if self.epoch != epoch:
                return not self.gate.stopping  # it came back while this one waited for its turn
            if self.gave_up is not None:
                raise copy.copy(self.gave_up)
            return await self._probe_until_back(pool, limit_s, cause)

    async def _probe_until_back(self, pool: SmtpPool, limit_s: float, cause: SmtpError) -> bool:
        assert self.since is not None
        left_s = limit_s - (time.monotonic() - self.since)
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_unreachable),
            stop=stop_after_delay(max(0.0, left_s)),
            wait=wait_random_exponential(multiplier=PROBE_INITIAL_S, max=PROBE_MAX_S),
            sleep=self.gate.pause,
            reraise=True,
        )
        last: SmtpError = cause
        try:
            async for attempt in retrying:
                with attempt:
                    if self.gate.stopping:
                        return False
                    await pool.probe()
        except SmtpError as exc:
            if not is_unreachable(exc):
                raise  # the server answers now, but refuses: that message's own failure
            last = exc
        else:
            waited = time.monotonic() - self.since
            log.info("connection %s: the server takes sessions again after %.1f s", pool.transport.connection.name,
                     waited)
            self.since, self.epoch = None, self.epoch + 1
            return True
        if self.gate.stopping:
            return False
        waited = time.monotonic() - self.since
        c = pool.transport.connection
        self.gave_up = ServerUnavailableError(
            f"not sent: the server stopped taking sessions and did not come back within {waited:.0f} s "
            f"(retry_outage_s {limit_s:g}); last: {last.message}", host=c.host, port=c.port)
        log.error("connection %s: %s", c.name, self.gave_up.message)
        raise copy.copy(self.gave_up)
