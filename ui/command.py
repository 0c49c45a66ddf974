"""The ``mailgem ui`` command: its arguments (standard library only, so ``mailgem --help`` stays
light) and its start, which imports the web stack only when it runs."""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_PORT", "add_parser", "run"]

# Jupyter's habit: a fixed default port, the next free one when it is taken.
DEFAULT_PORT = 8765
PORT_TRIES = 10


def add_parser(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``ui`` to the CLI's subcommands (``command`` is the CLI's own helper, for the same help layout)."""
    p = command(sub, "ui", "open the browser dialogs: the fabric's connections (with Test connection) and a job's "
                           "Email gem with a live preview", "mailgem ui --fabric fabric.yaml --job daily.yaml")
    p.add_argument("--fabric", type=Path, default=Path(os.environ["MAILGEM_FABRIC"]) if os.environ.get("MAILGEM_FABRIC")
                   else None, metavar="FABRIC.yaml", help="the fabric to show and edit (default: $MAILGEM_FABRIC)")
    p.add_argument("--job", type=Path, metavar="JOB.yaml", help="the job whose Email gem to edit and preview")
    p.add_argument("--local", action="store_true",
                   help="preview and send tests through the embedded local SMTP server instead of the job's connection")
    p.add_argument("--outbox", type=Path, default=Path("outbox"),
                   help="with --local: folder for the messages the embedded server receives (default: outbox)")
    p.add_argument("--user", help="who uses the dialogs (default: $MAILGEM_USER, else the OS login)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs --token)")
    p.add_argument("--port", type=int, help=f"port (default: {DEFAULT_PORT}, or the next free one)")
    p.add_argument("--token", default=os.environ.get("MAILGEM_UI_TOKEN"),
                   help="the access token (default: $MAILGEM_UI_TOKEN, which keeps it out of `ps`, else a new random "
                        "one each start, printed in the URL)")
    p.add_argument("--no-browser", action="store_true", help="print the URL, do not open a browser")
    p.add_argument("--master", default=os.environ.get("MAILGEM_SPARK_MASTER", "local[2]"),
                   help="Spark master for a job with a transform (default: $MAILGEM_SPARK_MASTER, else local[2])")
    return p


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    """Serve the app until SIGINT/SIGTERM; returns the exit code.

    Raises:
        UsageError: another address than loopback without ``--token``, a bad port or token.
        MailgemError: the ``ui`` extra is not installed; the fabric or job cannot be loaded.
    """
    from mailgem.connections.errors import MailgemError
    from mailgem.runner.cli.output import UsageError

    if not _is_loopback(args.host) and not args.token:
        raise UsageError(f"--host {args.host} makes the dialogs reachable from other machines: give --token with a "
                         "long random value (e.g. `--token $(openssl rand -hex 24)`) so only you can open them")
    if args.port is not None and not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: give a port between 1 and 65535 (0: any free port)")
    if args.token is not None and len(args.token) < 8:
        raise UsageError("--token is shorter than 8 characters: give a long random value")
    if args.fabric is None and args.job is None:
        raise UsageError("give --fabric FABRIC.yaml (its connections) and/or --job JOB.yaml (its Email gem)")
    try:
        import ruamel.yaml  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MailgemError(f"mailgem ui needs the ui extra ({exc.name} is not installed): "
                           "pip install 'mailgem[ui]'") from None
    from .server import serve

    return serve(args)
