"""``main``: parse the command line, take SIGTERM and SIGINT, run the command, and turn every way it
can end into one line on stderr and an exit code — never a Python or Java trace (``-v`` shows it)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable

from .parser import EXIT_FAILED, EXIT_OK, parser
from .signals import Interrupted, Signals

__all__ = ["main", "run_command"]


def _dispatch(args: argparse.Namespace) -> int:
    # Each command's module is imported only when it runs (`mailgem --version` imports none).
    commands: dict[str, tuple[str, str]] = {
        "run": (".run", "cmd_run"), "validate": (".validate", "cmd_validate"), "preview": (".preview", "cmd_preview"),
        "connection": (".connection", "cmd_connection_test"), "secrets": (".secrets", "cmd_secrets"),
        "schema": (".schema", "cmd_schema")}
    if args.command not in commands:  # an add-on's command (parser.PLUGIN_GROUP), e.g. `mailgem ui`
        plugin: Callable[[argparse.Namespace], int] = importlib.import_module(args.plugin).run
        return plugin(args)
    module, name = commands[args.command]
    command: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module, __package__), name)
    return command(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mailgem`` console script; returns the exit code (see ``mailgem --help``)."""
    return run_command(parser().parse_args(argv))


def run_command(args: argparse.Namespace) -> int:
    """Run the command ``args`` holds (as :func:`main` parsed it) with the signal handling and the
    error handling of the ``mailgem`` command; returns its exit code. What the command found is
    left on ``args`` (``args.summary``, :func:`~.output.record`)."""
    signals = Signals()
    signals.install()
    args.signals = signals  # the commands' way to them (run's stop, Spark's start-up)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(args)
    except Interrupted as exc:
        from .output import fail

        return fail(args, f"{exc} before anything was sent; nothing was sent", code=128 + exc.signum,
                    messages=0, counts={}, stopped_by=exc.name)
    except BrokenPipeError:
        # `mailgem schema | head`: the reader left; end quietly, and keep Python's exit-time flush quiet too.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a trace
        return _failure(args, exc, sending=signals.sending)
    finally:
        signals.restore()
        log_file = getattr(args, "spark_log", None)
        if log_file is not None and not getattr(args, "keep_spark_log", False):
            with contextlib.suppress(OSError):
                log_file.unlink()


def _failure(args: argparse.Namespace, exc: Exception, *, sending: bool) -> int:
    """A command ended by an exception: mailgem's own errors (a user's mistake: exit 2), Spark's
    (its one line), or anything else (exit 1, with what was sent so far)."""
    from mailgem.connections.errors import MailgemError
    from mailgem.fabric.errors import AccessDeniedError

    from .output import fail
    from .steps import is_spark_error, spark_failure

    if isinstance(exc, AccessDeniedError):
        return fail(args, f"access denied: {exc}")
    if isinstance(exc, MailgemError):
        if args.verbose:
            traceback.print_exc()
        return fail(args, str(exc))
    if is_spark_error(exc):
        # Spark's own errors (a file Spark cannot read, a failed stage): its one useful line.
        return fail(args, f"Spark could not run the job: {spark_failure(args, exc, getattr(args, 'spark_log', None))}")
    return _unexpected(args, exc, sending)


def _unexpected(args: argparse.Namespace, exc: Exception, sending: bool) -> int:
    """A bug or an error nobody foresaw: its type and where, what was sent so far, where Spark's
    log is, and ``-v`` for the trace; exit 1."""
    from .output import fail

    if args.verbose:
        traceback.print_exc()
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    # The error's type and where, not its text: a library's text may quote a value (a URL with a
    # password, a token), and this line goes to scheduler logs; -v shows it to whoever runs it.
    log_file = getattr(args, "spark_log", None)
    if log_file is not None:
        args.keep_spark_log = True
    more = f"; Spark's own log: {log_file}" if log_file is not None else ""
    return fail(args, f"unexpected error {type(exc).__name__}{where}; {_sent_so_far(args, sending)}{more}; "
                      "-v shows the full trace", code=EXIT_FAILED)


def _sent_so_far(args: argparse.Namespace, sending: bool) -> str:
    gem = getattr(args, "gem", None)
    if not sending or gem is None:
        return "nothing was sent"
    if not gem.outcomes:
        return ("what its Spark workers had sent is not known here: with a ledger, a re-run with the same run key "
                "sends only what was not accepted")
    # Imported here: `mailgem --version` imports no gem.
    from mailgem.gems.email.run.status import DeliveryStatus

    accepted = gem.outcomes[DeliveryStatus.SENT] + gem.outcomes[DeliveryStatus.PARTIAL]
    return (f"{accepted:,} message(s) had been accepted before it; with a ledger, a re-run with the same run key "
            "sends only the rest")
