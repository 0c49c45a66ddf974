"""Stopping a run on request — a scheduler's SIGTERM, Ctrl-C, a caller's own reason.

A :class:`StopSignal` is the run's :class:`~mailgem.connections.gate.Gate`: once requested, no
new message starts and no retry is made, every wait (backoff, rate limit, an outage) ends at once,
messages whose transaction began finish, their outcomes are recorded, and every message that did
not start is reported ``not_started`` with the reason.

On Spark the messages are sent by the executors' Python workers, which a signal to the driver
never reaches. The driver serves the signal on a small TCP :class:`StopBeacon` (on its own
address, ``spark.driver.host``; a random token is the only thing a worker must say), and each
partition's :class:`StopListener` connects to it when it starts and requests the stop when the
driver says so, or when the driver goes away. A worker that cannot reach the beacon sends as
before and says so in Spark's log; the driver's second signal then ends everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["StopSignal", "StopBeacon", "StopListener", "BeaconAddress"]

log = logging.getLogger("mailgem.gems")

# How often the beacon's thread looks for a stop request and new workers, seconds.
_POLL_S = 0.1
# How long a worker tries to reach the beacon, and to say its token, seconds.
_CONNECT_TIMEOUT_S = 5.0


class StopSignal:
    """A thread- and signal-handler-safe request to stop a run (see the module docstring).

    ``request`` may be called from a signal handler, another thread or the event loop; the
    first reason stands. Implements :class:`mailgem.connections.gate.Gate`.
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        # Re-entrant: a signal handler may request while the main thread holds it (in pause()).
        self._lock = threading.RLock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._listeners: list[Callable[[str], None]] = []

    def __repr__(self) -> str:
        return f"StopSignal(reason={self.reason!r})"

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self.reason is not None

    def request(self, reason: str) -> None:
        """Stop, for ``reason`` (e.g. ``"stopped by SIGTERM"``): every pause ends now."""
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            waiters, listeners = list(self._waiters), list(self._listeners)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed: nothing waits there
                loop.call_soon_threadsafe(event.set)
        for listener in listeners:
            listener(reason)

    def on_request(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(reason)`` when the stop is requested (at once if it was)."""
        with self._lock:
            if self.reason is None:
                self._listeners.append(listener)
                return
        listener(self.reason)

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or until the stop is requested."""
        if self.reason is not None or seconds <= 0:
            return
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.add(entry)
        try:
            if self.reason is None:  # asked again now that a request would wake this wait
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(entry[1].wait(), seconds)
        finally:
            with self._lock:
                self._waiters.discard(entry)


@dataclass(frozen=True)
class BeaconAddress:
    """Where a worker reaches the driver's :class:`StopBeacon` (picklable, travels with the job)."""

    host: str
    port: int
    token: str = ""

    def __repr__(self) -> str:
        return f"BeaconAddress(host={self.host!r}, port={self.port})"  # the token stays out of logs


class StopBeacon:
    """The driver's side: a TCP listener on ``host`` that tells every connected worker (that
    said the token) ``STOP <reason>`` once ``signal`` is requested. Use as a context manager.

    Args:
        signal: the run's stop signal.
        host: the driver's address as the executors reach it (``spark.driver.host``).
    """

    def __init__(self, signal: StopSignal, host: str) -> None:
        self.signal = signal
        self.host = host
        self.token = secrets.token_hex(16)
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self.workers = 0  # connections that said the token (for tests and the log)

    def __enter__(self) -> BeaconAddress:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server = socket.socket(family, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((self.host, 0))
        server.listen(64)
        server.setblocking(False)
        self._server = server
        self._thread = threading.Thread(target=self._serve, name="mailgem-stop-beacon", daemon=True)
        self._thread.start()
        return BeaconAddress(self.host, server.getsockname()[1], self.token)

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._server is not None:
            self._server.close()

    def _serve(self) -> None:
        """Accept workers and check their token; once stopping, tell each (and any later one)."""
        assert self._server is not None
        workers: list[socket.socket] = []
        told: set[socket.socket] = set()
        try:
            while not self._done.is_set():
                ready, _, _ = select.select([self._server], [], [], _POLL_S)
                if ready:
                    with contextlib.suppress(OSError):
                        worker, _ = self._server.accept()
                        if self._welcome(worker):
                            workers.append(worker)
                if self.signal.reason is not None:
                    line = f"STOP {self.signal.reason}\n".encode()
                    for worker in workers:
                        if worker not in told:
                            told.add(worker)
                            with contextlib.suppress(OSError):
                                worker.sendall(line)
        finally:
            for worker in workers:
                with contextlib.suppress(OSError):
                    worker.close()

    def _welcome(self, worker: socket.socket) -> bool:
        """Read the worker's token line (bounded in time and size); keep it only if it matches."""
        try:
            worker.setblocking(True)
            worker.settimeout(_CONNECT_TIMEOUT_S)
            said = worker.recv(128).strip().decode("ascii", "replace")
            worker.settimeout(None)
        except OSError:
            said = ""
        if not hmac.compare_digest(said, self.token):
            with contextlib.suppress(OSError):
                worker.close()
            return False
        self.workers += 1
        return True


class StopListener:
    """A worker's side: connects to the driver's beacon and requests ``signal``'s stop when the
    driver says ``STOP`` or goes away. Use as a context manager around the partition's sending.

    Args:
        address: the beacon's address, or ``None`` (nothing to listen to).
        signal: this partition's stop signal.
    """

    def __init__(self, address: BeaconAddress | None, signal: StopSignal) -> None:
        self.address = address
        self.signal = signal
        self._sock: socket.socket | None = None
        self._closing = False
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StopListener:
        if self.address is None:
            return self
        try:
            sock = socket.create_connection((self.address.host, self.address.port), timeout=_CONNECT_TIMEOUT_S)
            sock.sendall(self.address.token.encode() + b"\n")
            sock.settimeout(None)
        except OSError as exc:
            log.warning("cannot reach the driver's stop beacon at %s:%s (%s): a stop of the run will not reach this "
                        "Spark worker, which sends its messages to the end", self.address.host, self.address.port, exc)
            return self
        self._sock = sock
        self._thread = threading.Thread(target=self._listen, name="mailgem-stop-listener", daemon=True)
        self._thread.start()
        return self

    def _listen(self) -> None:
        assert self._sock is not None
        received = b""
        try:
            while b"\n" not in received:
                chunk = self._sock.recv(1024)
                if not chunk:
                    break
                received += chunk[:4096]
        except OSError:
            pass
        if self._closing:
            return  # the partition is done: nothing to stop
        line = received.decode("utf-8", "replace").strip()
        reason = line[5:] if line.startswith("STOP ") else "the Spark driver went away"
        log.warning("stopping this Spark worker's sending: %s", reason)
        self.signal.request(reason)

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
