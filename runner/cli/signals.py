"""SIGTERM and SIGINT for the ``mailgem`` command: how a scheduler (Airflow, Kubernetes, systemd,
``timeout``) or a person with Ctrl-C stops it.

Before anything may have been sent, a signal ends the command at once (:class:`Interrupted`).
Once sending has begun, the first signal is a request: no new message starts, the messages being
written finish (bounded by the connection's timeouts), every outcome is recorded, the delivery
report is written with the rest ``not_started``, and the command exits 143 (SIGTERM) or 130
(SIGINT). A second signal ends the process at once, as a kill does (the ledger keeps what it
recorded; a message it holds as ``sending`` is sent again by a re-run, with its Message-ID).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailgem.gems.email.run.stop import StopSignal

__all__ = ["Signals", "Interrupted"]

_HANDLED = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """A signal arrived before anything was sent: the command ends now (not an error: a
    ``BaseException``, so no ``except Exception`` on the way holds it up)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.name}")


class Signals:
    """The command's handlers for SIGTERM and SIGINT (see the module docstring).

    Attributes:
        stop: the run's stop signal, requested by the first signal once ``sending`` is set.
        sending: messages may be going out: a signal is a request to stop, not the end.
        signum: the first signal received, if any.
    """

    def __init__(self) -> None:
        self.sending = False
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._holding = False

    @functools.cached_property
    def stop(self) -> StopSignal:
        # Made on first use: the handlers go in before anything heavy is imported.
        from mailgem.gems.email.run.stop import StopSignal

        return StopSignal()

    def install(self) -> None:
        """Take SIGTERM and SIGINT. Only the main thread can; elsewhere (``main()`` called from a
        thread) nothing changes. (PySpark takes SIGINT when Spark starts: :meth:`held` takes it
        back.)"""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in _HANDLED:
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)

    def restore(self) -> None:
        """Put back the handlers there were before :meth:`install` (``main()`` called in-process)."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """While Spark starts: a first signal ends the command only once the JVM is up. PySpark
        removes the folder the starting JVM reports to when it is interrupted, and that JVM
        then never reads its stdin, so it would outlive this process; once up, it ends with it.
        Afterwards SIGINT is taken back: PySpark installs its own (cancel the jobs, raise
        KeyboardInterrupt)."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            if signal.SIGINT in self._previous:  # installed: this is the main thread
                signal.signal(signal.SIGINT, self._handle)
        if self.signum is not None and not self.sending:
            raise Interrupted(self.signum)

    @property
    def exit_code(self) -> int | None:
        """128 + the signal's number (130, 143), once a signal arrived."""
        return None if self.signum is None else 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            # The second signal: end now, by the signal itself (the shell sees 128 + its number).
            os.write(2, f"mailgem: {name} again: ending now\n".encode())
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            os._exit(128 + signum)  # as PID 1 (a container's entry point) the signal is ignored: end anyway
        self.signum = signum
        if self._holding and not self.sending:
            os.write(2, f"mailgem: {name}: ending once Spark has started (another {name} ends at once)\n".encode())
            return
        if not self.sending:
            raise Interrupted(signum)
        self.stop.request(f"stopped by {name}")
        os.write(2, (f"mailgem: {name}: starting no new message; the messages being written finish and the report "
                     f"follows (another {name} ends at once)\n").encode())
