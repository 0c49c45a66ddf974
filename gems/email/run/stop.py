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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ...spark_info import is_connect

__all__ = ["StopSignal", "StopBeacon", "StopListener", "BeaconAddress", "beacon_for"]

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

    def __repr__(self) -> str:
        return f"StopSignal(reason={self.reason!r})"

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self.reason is not None

    def may_start(self) -> bool:
        """A message may start until a stop is requested."""
        return self.reason is None

    def may_write(self) -> bool:
        """Messages already started are written to the end: a stop holds back only new ones."""
        return True

    def request(self, reason: str) -> None:
        """Stop, for ``reason`` (e.g. ``"stopped by SIGTERM"``): every pause ends now."""
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed: nothing waits there
                loop.call_soon_threadsafe(event.set)

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
    """The driver's side: a TCP listener that tells every connected worker (that said the token)
    ``STOP <reason>`` once ``signal`` is requested. Use as a context manager; it yields the
    address workers connect to, or ``None`` when it cannot listen (then a stop reaches only
    the driver, and says so).

    Args:
        signal: the run's stop signal.
        host: the driver's address as the executors reach it (``spark.driver.host``).
        bind: the local address to listen on (``spark.driver.bindAddress``; default ``host``):
            they differ behind NAT, in Docker or Kubernetes.
    """

    def __init__(self, signal: StopSignal, host: str, bind: str | None = None) -> None:
        self.signal = signal
        self.host = host
        self.bind = bind or host
        self.token = secrets.token_hex(16)
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self.workers = 0  # connections that said the token

    def __enter__(self) -> BeaconAddress | None:
        try:
            family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
            server = socket.create_server((self.bind, 0), family=family)
        except OSError as exc:
            log.warning("cannot listen on %s for Spark workers (%s): a stop of this run reaches the driver only; the "
                        "workers send to the end", self.bind, exc)
            return None
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
            log.info("%d Spark worker partition(s) listened for a stop of this run", self.workers)

    def _serve(self) -> None:
        """Accept workers and check their token without waiting on any one of them; once
        stopping, tell each (and any later one). A connection that misbehaves is closed alone."""
        assert self._server is not None
        pending: dict[socket.socket, float] = {}  # connected, token not read yet: since when
        workers: list[socket.socket] = []
        told: set[socket.socket] = set()
        try:
            while not self._done.is_set():
                ready, _, _ = select.select([self._server, *pending], [], [], _POLL_S)
                for sock in ready:
                    if sock is self._server:
                        with contextlib.suppress(OSError):
                            worker, _ = self._server.accept()
                            worker.setblocking(False)
                            pending[worker] = time.monotonic()
                    else:
                        del pending[sock]
                        if self._welcome(sock):
                            workers.append(sock)
                for sock, since in list(pending.items()):
                    if time.monotonic() - since > _CONNECT_TIMEOUT_S:  # said nothing: not one of ours
                        del pending[sock]
                        sock.close()
                if self.signal.reason is not None:
                    line = f"STOP {self.signal.reason}\n".encode()
                    for worker in workers:
                        if worker not in told:
                            told.add(worker)
                            with contextlib.suppress(OSError):
                                worker.sendall(line)
        finally:
            for sock in (*workers, *pending):
                with contextlib.suppress(OSError):
                    sock.close()

    def _welcome(self, worker: socket.socket) -> bool:
        """Read the worker's token line (it is there: the socket is readable); keep the
        connection only if it matches."""
        try:
            said = worker.recv(128).strip()
            ok = hmac.compare_digest(said, self.token.encode())
        except Exception:  # noqa: BLE001 - a stray connection (a scanner, a TLS hello) is closed, nothing more
            ok = False
        if not ok:
            with contextlib.suppress(OSError):
                worker.close()
            return False
        worker.setblocking(True)
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


@contextlib.contextmanager
def beacon_for(spark: Any, stop: StopSignal | None) -> Iterator[BeaconAddress | None]:
    """Where the executors hear of a stop: the driver's :class:`StopBeacon`, on the address
    they reach the driver at. Spark Connect's client is not reachable from the executors."""
    if stop is None or is_connect(spark):
        if stop is not None:
            log.warning("a stop requested while the Spark Connect job runs does not reach its executors; they "
                        "send to the end (cancel the job to end them sooner)")
        yield None
        return
    host = spark.conf.get("spark.driver.host", "127.0.0.1")
    with StopBeacon(stop, host, spark.conf.get("spark.driver.bindAddress", None) or host) as address:
        yield address
