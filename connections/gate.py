"""The caller's say over when sending stops, as the delivery layer asks it.

The delivery layer knows nothing of why a run stops (a scheduler's SIGTERM, Ctrl-C, the run's
own rules): it asks a :class:`Gate` whether it is stopping before each message starts and before
each retry, and waits through it (backoff, rate limits, an outage), so that a stop ends every
wait at once. Messages whose transaction has begun finish; what was never started is the
caller's to report.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

__all__ = ["Gate", "OPEN"]


@runtime_checkable
class Gate(Protocol):
    """Asked by :class:`mailgem.connections.delivery.Deliverer`."""

    @property
    def stopping(self) -> bool:
        """``True`` once no new message and no retry may start (those being written finish)."""
        ...

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less: a pause ends as soon as the gate is stopping."""
        ...


class _Open:
    """A gate that never stops: pauses are plain sleeps."""

    stopping = False

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "OPEN"


OPEN: Gate = _Open()
