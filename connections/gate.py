"""The caller's say over when messages may go, as the delivery layer asks it.

The delivery layer knows nothing of why a caller holds a message back (a scheduler's SIGTERM,
Ctrl-C, the run's own rules about failures, a claim on the message that may have lapsed): it asks
a :class:`Gate` at fixed points and obeys.

- ``may_start()``: once a session is free for a message's first attempt, before anything of it is
  written. ``False``: the message is ``not_started``.
- ``may_write()``: before *every* attempt, retries included, and once more when the server is
  ready for the content (after ``354``, or before ``DATA``). ``False``: the message is
  ``not_started`` however many attempts went before, and content already announced is withheld
  (:class:`~mailgem.connections.errors.ContentWithheldError`): nothing is delivered.
- ``stopping``: no new message and no retry starts (a message that failed an attempt keeps its
  last failure); messages being written finish.
- ``pause(seconds)``: every wait (backoff, rate limits, an outage) goes through it, so a stop ends
  it at once.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

__all__ = ["Gate", "OPEN"]


@runtime_checkable
class Gate(Protocol):
    """Asked by :class:`mailgem.connections.delivery.Deliverer` and
    :meth:`mailgem.connections.session.SmtpSession.send_bytes` (see the module docstring)."""

    @property
    def stopping(self) -> bool:
        """``True`` once no new message and no retry may start (those being written finish)."""
        ...

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less: a pause ends as soon as the gate is stopping."""
        ...

    def may_start(self) -> bool:
        """Whether this message's first attempt may begin (asked once a session is free for it)."""
        ...

    def may_write(self) -> bool:
        """Whether anything of this message may still be written: asked before every attempt and
        before its content."""
        ...


class _Open:
    """A gate that never stops and never holds a message back: pauses are plain sleeps."""

    stopping = False

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def may_start(self) -> bool:
        return True

    def may_write(self) -> bool:
        return True

    def __repr__(self) -> str:
        return "OPEN"


OPEN: Gate = _Open()
