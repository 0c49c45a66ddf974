"""Per-connection rate limits, shared by everything that sends through a connection in one process.

``rate_per_s`` spaces messages evenly (a reservation scheduler: each send books the next free
slot, so concurrent senders never burst past the rate); ``max_per_day`` caps the messages of
one UTC day (e.g. Gmail's 500/day for consumer accounts).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Awaitable, Callable

from .errors import SmtpError
from .model import SmtpConnection

__all__ = ["RateLimiter", "DailyLimitReached", "limiter_for"]


class DailyLimitReached(SmtpError):
    """The connection's ``max_per_day`` is used up for this UTC day; the message was not sent."""

    default_transient = False
    default_hint = "the rest is sent on the next run after midnight UTC; raise max_per_day only if the provider allows it"


class RateLimiter:
    """Messages per second and per UTC day for one connection (thread- and event-loop-safe).

    Args:
        rate_per_s: messages per second, ``None`` for no limit.
        max_per_day: messages per UTC day, ``None`` for no limit.
    """

    def __init__(self, rate_per_s: float | None = None, max_per_day: int | None = None) -> None:
        self.rate_per_s = rate_per_s
        self.max_per_day = max_per_day
        self._interval = 1.0 / rate_per_s if rate_per_s else 0.0
        self._next = 0.0
        self._day = dt.datetime.now(dt.UTC).date()
        self._sent_today = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RateLimiter(rate_per_s={self.rate_per_s}, max_per_day={self.max_per_day}, sent_today={self._sent_today})"

    def reserve(self) -> float:
        """Book one message; return how long to wait before sending it, seconds.

        Raises:
            DailyLimitReached: ``max_per_day`` messages were already booked today.
        """
        with self._lock:
            today = dt.datetime.now(dt.UTC).date()
            if today != self._day:
                self._day, self._sent_today = today, 0
            if self.max_per_day is not None and self._sent_today >= self.max_per_day:
                raise DailyLimitReached(f"daily limit of {self.max_per_day} messages reached for {today.isoformat()} (UTC)")
            self._sent_today += 1
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self._interval
            return slot - now

    async def acquire(self, pause: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Wait for this message's slot (see :meth:`reserve`); ``pause`` waits (a
        :meth:`mailgem.connections.gate.Gate.pause` ends early when the run stops)."""
        if not self._interval and self.max_per_day is None:
            return  # no limit: nothing to book
        delay = self.reserve()
        if delay > 0:
            await pause(delay)


_LIMITERS: dict[tuple[str, str, int, str | None], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter_for(connection: SmtpConnection, share: float = 1.0) -> RateLimiter:
    """The process-wide limiter of ``connection``.

    ``share`` (0 < share <= 1) scales both limits, for one of several processes (Spark Python
    workers) that together must stay within the connection's limits.
    """
    key = (connection.name, connection.host, connection.port, connection.username)
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(key)
        if limiter is None:
            rate = connection.rate_per_s * share if connection.rate_per_s else None
            per_day = max(1, int(connection.max_per_day * share)) if connection.max_per_day else None
            limiter = _LIMITERS[key] = RateLimiter(rate, per_day)
        return limiter
