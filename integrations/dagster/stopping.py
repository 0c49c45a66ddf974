"""A terminated Dagster run stops a send the way ``mailgem run`` stops on SIGTERM.

Dagster terminates a run by signalling its process (SIGTERM, which its run and step workers treat
as SIGINT) and turns the signal into an exception at the next bytecode. Raised in the middle of a
send, that would cut a message mid-transaction and lose the report. While a send runs, the first
SIGINT or SIGTERM is instead a request (:class:`~mailgem.gems.email.run.stop.StopSignal`): no new
message starts, those being written finish and are recorded, the rest are ``not_started`` in the
report, and the step fails with it. A second signal goes to the handler there was before
(Dagster's), which ends the step at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from mailgem.gems.email.run.stop import StopSignal

__all__ = ["stop_on_signal"]

_HANDLED = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signal() -> Iterator[StopSignal]:
    """A stop signal the first SIGINT or SIGTERM requests while the block runs (reason
    ``"stopped by SIGTERM"``); the handlers there were come back afterwards. Off the main thread,
    where Python cannot take signals, the signal is never requested."""
    stop = StopSignal()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous: dict[int, Any] = {}

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.stopping:  # the second: as if the send were not there
            before = previous.get(signum)
            if callable(before):
                before(signum, frame)
                return
            raise KeyboardInterrupt
        stop.request(f"stopped by {signal.Signals(signum).name}")

    try:
        for taken in _HANDLED:
            previous[taken] = signal.signal(taken, handle)
        yield stop
    finally:
        for given_back, before in previous.items():
            signal.signal(given_back, before)
