"""What the benchmarks share: free ports, the sink (smtp-sink in a process of its own), the
delay proxy (a round trip added to a TCP connection), the CPU meter, the per_row frame and its
messages built the common way, and the fabric that sends to the sink.

Run as a script, it is the delay proxy's process (``DelayProxy`` starts it)."""

from __future__ import annotations

import argparse
import contextlib
import queue
import shutil
import smtplib
import socket
import subprocess
import sys
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NOTE = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 24  # ~1.4 KB: messages of ~2 KB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, what: str, timeout_s: float = 10.0) -> None:
    """Return once 127.0.0.1:``port`` accepts connections; RuntimeError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not start")


def _tree_cpu_s(root: psutil.Process) -> dict[int, float]:
    """CPU seconds (user + system) of ``root`` and its live descendants, by pid."""
    seconds: dict[int, float] = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            seconds[proc.pid] = t.user + t.system
        except psutil.Error:  # exited meanwhile: its CPU is not counted
            pass
    return seconds


class Metered:
    """A timed span of sending ``n`` messages: its rate and the CPU spent in it.

    ``sender`` is the process tree doing the work (this process by default), ``sink`` the
    receiving server's process. After the ``with`` block: :attr:`rate` (messages/s),
    :attr:`cores` (the sender's CPU seconds per wall second), :attr:`us_per_msg` (its CPU
    microseconds a message) and :attr:`sink_cores`.
    """

    sink_pid: int | None = None  # set once the sink runs: every span measures it

    def __init__(self, n: int) -> None:
        self.n = n
        self.sender = psutil.Process()
        self.sink = psutil.Process(self.sink_pid) if self.sink_pid else None

    def __enter__(self) -> Metered:
        self._cpu = _tree_cpu_s(self.sender)
        self._sink_cpu = _tree_cpu_s(self.sink) if self.sink else {}
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._start
        cpu = sum(s - self._cpu.get(pid, 0.0) for pid, s in _tree_cpu_s(self.sender).items())
        sink = sum(s - self._sink_cpu.get(pid, 0.0) for pid, s in _tree_cpu_s(self.sink).items()) if self.sink else 0.0
        self.rate = self.n / wall
        self.cores = cpu / wall
        self.us_per_msg = cpu / self.n * 1e6
        self.sink_cores = sink / wall

    def cpu(self) -> dict[str, float]:
        """The CPU figures for ``--json``: cores, us_per_msg and sink_cores, rounded."""
        return {"cores": round(self.cores, 2), "us_per_msg": round(self.us_per_msg, 1), "sink_cores": round(self.sink_cores, 2)}


class Sink:
    """smtp-sink (or an aiosmtpd fallback) in a separate process on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.kind = "smtp-sink" if shutil.which("smtp-sink") else "aiosmtpd (fallback: compare ratios only)"
        if shutil.which("smtp-sink"):
            cmd = ["smtp-sink", "-u", "nobody", f"127.0.0.1:{self.port}", "1000"]
        else:
            cmd = [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{self.port}", "-c", "aiosmtpd.handlers.Sink"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, "the sink")

    def ceiling(self, n: int) -> float | None:
        """The sink's own ceiling, messages/s, from smtp-source (8 sessions, 2 KB messages)."""
        if not shutil.which("smtp-source"):
            return None
        start = time.perf_counter()
        subprocess.run(["smtp-source", "-s", "8", "-m", str(n), "-l", "2048", f"127.0.0.1:{self.port}"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return n / (time.perf_counter() - start)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def rows(n: int):
    import pandas as pd

    return pd.DataFrame({"id": range(n), "email": [f"user{i}@example.com" for i in range(n)],
                         "name": [f"Customer {i}" for i in range(n)], "amount": [i * 1.25 for i in range(n)],
                         "note": [NOTE] * n})


def plain_message(r) -> EmailMessage:
    """One row's message, built the usual way (a new EmailMessage each time)."""
    msg = EmailMessage()
    msg["From"] = "bench@example.com"
    msg["To"] = r.email
    msg["Subject"] = f"Order {r.id} for {r.name}"
    msg.set_content(f"Dear {r.name}, amount {r.amount}. {r.note}")
    return msg



class DelayProxy:
    """A TCP proxy on 127.0.0.1 that delays every chunk ``delay_s`` in each direction, in order:
    a round trip of ``2 * delay_s`` to the sink. It runs in a process of its own, so the client
    measured never holds the proxy up (a thread would wait for the client's GIL)."""

    def __init__(self, target_port: int, delay_s: float = 0.005) -> None:
        self.delay_s = delay_s
        self.target_port = target_port
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, __file__, "--delay-proxy", str(target_port), "--port", str(self.port),
                                      "--delay-s", str(delay_s)])
        wait_for_port(self.port, "the delay proxy")

    @staticmethod
    def serve(listen_port: int, target_port: int, delay_s: float) -> None:
        """The proxy's process: forward 127.0.0.1:listen_port to target_port until terminated.

        Two threads a direction (one reads, one writes each chunk when it is due): a thread's
        ``time.sleep`` keeps a sub-millisecond delay, where an event loop's timer waits at least
        a millisecond (epoll's timeout is in milliseconds). Nagle's algorithm is off both ways,
        so no delay but ``delay_s`` is added."""
        listener = socket.create_server(("127.0.0.1", listen_port))
        while True:
            client, _ = listener.accept()
            upstream = socket.create_connection(("127.0.0.1", target_port))
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for source, sink in ((client, upstream), (upstream, client)):
                chunks: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()
                threading.Thread(target=_read_chunks, args=(source, chunks, delay_s), daemon=True).start()
                threading.Thread(target=_write_when_due, args=(sink, chunks), daemon=True).start()

    def round_trip_ms(self, samples: int = 21) -> float:
        """The round trip through the proxy as a client sees it, milliseconds: the median of
        ``samples`` NOOPs on one connection."""
        with smtplib.SMTP("127.0.0.1", self.port) as smtp:
            times = []
            for _ in range(samples):
                start = time.perf_counter()
                smtp.noop()
                times.append((time.perf_counter() - start) * 1000)
        return sorted(times)[len(times) // 2]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _read_chunks(sock: socket.socket, chunks: queue.SimpleQueue, delay_s: float) -> None:
    """The delay proxy's reading side: each chunk read from ``sock`` with the time it is due; an
    empty chunk once ``sock`` is closed."""
    try:
        while chunk := sock.recv(65536):
            chunks.put((time.monotonic() + delay_s, chunk))
    except OSError:
        pass
    chunks.put((0.0, b""))


def _write_when_due(sock: socket.socket, chunks: queue.SimpleQueue) -> None:
    """The delay proxy's writing side: each chunk written to ``sock`` when it is due, in order."""
    while True:
        due, chunk = chunks.get()
        if not chunk:
            break
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        try:
            sock.sendall(chunk)
        except OSError:
            break
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


def sink_fabric(port: int, **conn):
    from mailgem.connections import SmtpConnection
    from mailgem.fabric import Fabric, Team, current_user

    connection = SmtpConnection(name="sink", host="127.0.0.1", port=port, security="none", anonymous=True,
                                sender_address="bench@example.com", **conn)
    return Fabric(name="bench", teams=[Team(name="bench", members=[current_user()])], connections=[connection])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the delay proxy's process (see DelayProxy)")
    parser.add_argument("--delay-proxy", type=int, required=True, help="the port to forward to")
    parser.add_argument("--port", type=int, required=True, help="the port to listen on")
    parser.add_argument("--delay-s", type=float, default=0.005)
    args = parser.parse_args()
    DelayProxy.serve(args.port, args.delay_proxy, args.delay_s)
