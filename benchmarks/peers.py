"""Peers measured in the same run as mailgem: other libraries sending the same per_row messages.

nodemailer (Node's most used mail library) runs ``peers/nodemailer/send.mjs`` in a Node process
of its own: a pooled SMTP transport of 4 connections, the frame's messages handed to it at once.
Its rate and CPU are the script's own timed span (Node's start-up, nodemailer's loading and the
reading of the messages are not timed). It needs ``node`` (20 or later, as nodemailer 10 does)
and, the first time, ``npm`` to install the locked nodemailer into ``peers/nodemailer/node_modules``
(``npm ci``); without them the peer is skipped and the reason printed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil

NODEMAILER_DIR = Path(__file__).resolve().parent / "peers" / "nodemailer"
NODE_MIN_MAJOR = 20  # nodemailer 10's "engines"
INSTALL_TIMEOUT_S = 300
SEND_TIMEOUT_S = 600


class PeerSkipped(Exception):
    """The peer cannot run on this machine; the message says why (printed, then the run goes on)."""


@dataclass
class PeerSpan:
    """A peer's timed span, with the figures :class:`harness.Metered` gives: :attr:`rate`
    (messages/s), :attr:`cores` (the peer's CPU seconds per wall second), :attr:`us_per_msg`
    (its CPU microseconds a message) and :attr:`sink_cores` (the sink's CPU seconds per second
    of the peer's timed span)."""

    n: int
    label: str  # e.g. "nodemailer 10.6.1 on node v20.20.2"
    rate: float
    cores: float
    us_per_msg: float
    sink_cores: float

    def cpu(self) -> dict[str, float]:
        """The CPU figures for ``--json``: cores, us_per_msg and sink_cores, rounded."""
        return {"cores": round(self.cores, 2), "us_per_msg": round(self.us_per_msg, 1), "sink_cores": round(self.sink_cores, 2)}


def _run(cmd: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=NODEMAILER_DIR, capture_output=True, text=True, timeout=timeout_s)


def _lines(text: str, first: int = 0, last: int = 0) -> str:
    """``first`` or ``last`` non-empty lines of a tool's output, on one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[:first] if first else lines[-last:])


def nodemailer_ready() -> tuple[str, str]:
    """Make nodemailer runnable: check ``node``'s version and install the locked nodemailer when
    ``node_modules`` lacks it or holds another version. Returns ``node``'s path and a label naming
    both versions; raises :class:`PeerSkipped` with the reason when it cannot."""
    node = shutil.which("node")
    if node is None:
        raise PeerSkipped("`node` is not on PATH")
    version = _run([node, "--version"], 30).stdout.strip()  # e.g. v20.20.2
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        raise PeerSkipped(f"`node --version` said {version!r}") from None
    if major < NODE_MIN_MAJOR:
        raise PeerSkipped(f"node {version} is older than nodemailer's minimum ({NODE_MIN_MAJOR})")
    wanted = json.loads((NODEMAILER_DIR / "package.json").read_text())["dependencies"]["nodemailer"]
    installed = NODEMAILER_DIR / "node_modules" / "nodemailer" / "package.json"
    label = f"nodemailer {wanted} on node {version}"
    if installed.exists() and json.loads(installed.read_text()).get("version") == wanted:
        return node, label
    npm = shutil.which("npm")
    if npm is None:
        raise PeerSkipped("nodemailer is not installed and `npm` is not on PATH to install it")
    print(f"  (installing nodemailer {wanted} with `npm ci` in {NODEMAILER_DIR})")
    try:
        out = _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise PeerSkipped(f"`npm ci` did not finish in {INSTALL_TIMEOUT_S} s") from None
    if out.returncode != 0 or not installed.exists():
        raise PeerSkipped(f"`npm ci` failed (exit {out.returncode}): {_lines(out.stderr, first=4)}")
    return node, label


def write_messages(frame, path: Path) -> None:
    """The per_row messages of ``frame`` as JSON lines for send.mjs: the content
    :func:`harness.plain_message` builds for each row (From is added by the script)."""
    with path.open("w", encoding="utf-8") as f:
        for r in frame.itertuples():
            f.write(json.dumps({"to": r.email, "subject": f"Order {r.id} for {r.name}",
                                "text": f"Dear {r.name}, amount {r.amount}. {r.note}"}) + "\n")


def _cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def nodemailer_per_row(port: int, frame, sink_pid: int | None) -> PeerSpan:
    """Send ``frame``'s per_row messages with nodemailer to 127.0.0.1:``port``.

    The sink's CPU is measured around the whole Node process (the sink is idle while Node starts)
    and divided by nodemailer's timed seconds. Raises :class:`PeerSkipped` when nodemailer cannot
    run here, RuntimeError when it ran and failed (a refused message, a crash)."""
    node, label = nodemailer_ready()
    with tempfile.TemporaryDirectory(prefix="mailgem-bench-") as tmp:
        messages = Path(tmp) / "messages.jsonl"
        write_messages(frame, messages)
        sink_before = _cpu_s(sink_pid)
        try:
            out = _run([node, "send.mjs", str(messages), str(port)], SEND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"nodemailer did not finish in {SEND_TIMEOUT_S} s") from None
        sink_s = _cpu_s(sink_pid) - sink_before
    if out.returncode != 0:
        raise RuntimeError(f"nodemailer failed (exit {out.returncode}): {_lines(out.stderr, last=5)}")
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    n, seconds = figures["messages"], figures["seconds"]
    if n != len(frame):
        raise RuntimeError(f"nodemailer sent {n} messages of {len(frame)}")
    return PeerSpan(n=n, label=label, rate=n / seconds, cores=figures["cpu_s"] / seconds,
                    us_per_msg=figures["cpu_s"] / n * 1e6, sink_cores=sink_s / seconds)


def nodemailer_or_skip(port: int, frame, sink_pid: int | None, figures: dict[str, object]) -> PeerSpan | None:
    """:func:`nodemailer_per_row`, or None after printing why it was skipped. Sets
    ``figures["nodemailer"]`` to the versions run or to "skipped: REASON" (for ``--json``)."""
    try:
        span = nodemailer_per_row(port, frame, sink_pid)
    except PeerSkipped as skipped:
        print(f"  nodemailer skipped: {skipped}")
        figures["nodemailer"] = f"skipped: {skipped}"
        return None
    figures["nodemailer"] = span.label
    return span

