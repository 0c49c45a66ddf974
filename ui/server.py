"""Serving the app: the socket (127.0.0.1 by default, the next free port as Jupyter picks one),
the printed URL with its token, the browser, and uvicorn until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import errno
import html
import logging
import os
import secrets
import socket
import sys
import tempfile
import webbrowser
from pathlib import Path
from typing import Any

import uvicorn

from mailgem.connections.errors import MailgemError
from mailgem.fabric.model import current_user
from mailgem.runner.cli.output import UsageError
from mailgem.runner.cli.signals import Interrupted

from .app import UiConfig, create_app
from .command import DEFAULT_PORT, PORT_TRIES
from .security import cookie_name

__all__ = ["bind", "serve"]

log = logging.getLogger("mailgem.ui")


def bind(host: str, port: int | None) -> socket.socket:
    """A listening socket on ``host``: ``port``, or (``None``) the default port or one of the next free ones.

    Raises:
        UsageError: the port is taken, or the address is not this machine's.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    candidates = [port] if port is not None else list(range(DEFAULT_PORT, DEFAULT_PORT + PORT_TRIES))
    for candidate in candidates:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE and port is None:
                continue
            what = "is in use: choose another with --port" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise UsageError(f"cannot listen on {host}:{candidate}: {what}") from None
        sock.listen(64)
        return sock
    raise UsageError(f"ports {candidates[0]}-{candidates[-1]} on {host} are all in use: choose one with --port")


def serve(args: argparse.Namespace) -> int:
    """Serve until stopped; returns 0.

    Raises:
        UsageError, MailgemError: see :func:`bind` and :func:`mailgem.ui.app.create_app`.
    """
    token = args.token or secrets.token_urlsafe(32)
    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    hosts: frozenset[str] | None = frozenset({f"{shown}:{port}"})
    if args.host in ("127.0.0.1", "::1", "localhost"):
        hosts = frozenset({f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"})
    elif args.host in ("0.0.0.0", "::"):  # every address: reached by names we cannot know (the token guards it)
        hosts = None
        shown = socket.gethostname()
    config = UiConfig(fabric=args.fabric, job=args.job, local=args.local, outbox=args.outbox,
                      user=args.user or current_user(), token=token, hosts=hosts, cookie=cookie_name(port),
                      master=args.master)
    try:
        app = create_app(config)
    except MailgemError:
        sock.close()
        raise
    url = f"http://{shown}:{port}/?token={token}"
    print(f"mailgem ui: open {url}\n  (Ctrl-C stops it; the token is needed for every page)", flush=True)
    with contextlib.ExitStack() as stack:
        if not args.no_browser:
            _open_browser(url, stack)
        _run(app, sock, args.verbose)
    print("mailgem ui: stopped", file=sys.stderr)
    return 0


def _open_browser(url: str, stack: contextlib.ExitStack) -> None:
    """Open ``url`` through a page only this user can read, as Jupyter does: a browser's command
    line is visible to every local user (``ps``), and the URL holds the token."""
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mailgem-ui-")))
    page = folder / "open.html"
    fd = os.open(page, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f'<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={html.escape(url)}">'
                f'<title>mailgem ui</title><p><a href="{html.escape(url)}">Open mailgem ui</a></p>')
    with contextlib.suppress(webbrowser.Error):
        webbrowser.open(page.as_uri())


def _run(app: Any, sock: socket.socket, verbose: bool) -> None:
    """uvicorn on ``sock`` until SIGINT or SIGTERM."""
    # No access log: the first request's address holds the token.
    server = uvicorn.Server(uvicorn.Config(app, log_level="debug" if verbose else "warning",
                                           access_log=False, lifespan="on"))
    try:
        server.run(sockets=[sock])
    except Interrupted:
        pass  # uvicorn passes on the signal that stopped it; for a server that is the normal end (exit 0)
    finally:
        sock.close()
