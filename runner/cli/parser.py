"""The ``mailgem`` command's arguments, help texts and exit codes (standard library only: ``mailgem
--version`` and ``--help`` import nothing else)."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["parser", "EXIT_OK", "EXIT_FAILED", "EXIT_CONFIG", "EXIT_UNREACHABLE", "EXIT_SIGINT", "EXIT_SIGTERM",
           "EXIT_CODES", "FABRIC_ENV", "REPORT_FORMATS", "PLUGIN_GROUP"]

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_UNREACHABLE = 0, 1, 2, 3
# 128 + the signal's number, as shells report a process that a signal ended (POSIX).
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
EXIT_CODES = """exit codes:
  0    every message was sent, or skipped by rule (empty frame, accepted in an earlier run)
  1    some messages failed, were partly refused or deferred (the delivery report says which and why),
       or the delivery report could not be written (it is printed instead)
  2    configuration or input error: job, fabric, access, secret, ledger, source, template, SQL; nothing sent
       (also when every message failed on a template error that only the data revealed)
  3    nothing could be sent: the connection failed (unreachable, TLS, AUTH, refused sender)
  130  stopped by SIGINT (Ctrl-C), 143 stopped by SIGTERM: no new message started, the ones being written
       finished and were recorded, the others are not_started in the report; a second signal ends at once"""
FABRIC_ENV = "MAILGEM_FABRIC"
REPORT_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def _version() -> str:
    from mailgem import __version__  # the package's own __init__: no dependencies

    return __version__


def _default_fabric() -> Path | None:
    value = os.environ.get(FABRIC_ENV)
    return Path(value) if value else None


def _command(sub: Any, name: str, help_text: str, example: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                          epilog=f"example:\n  {example}\n\n{EXIT_CODES}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _job_options(parser: argparse.ArgumentParser, *, local: bool = True) -> None:
    parser.add_argument("job", type=Path, help="the job YAML file (source, transform, params, email)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--fabric", type=Path, default=_default_fabric(), metavar="FABRIC.yaml",
                       help=f"the fabric holding the job's connection (default: ${FABRIC_ENV})")
    if local:
        where.add_argument("--local", action="store_true",
                           help="use the embedded local SMTP server instead of the job's connection")
    parser.add_argument("--user", help="who runs the job (default: $MAILGEM_USER, else the OS login)")
    parser.add_argument("--param", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                        help="set the job's params.KEY (repeatable); VALUE is read as a YAML scalar, as in the job "
                             "file (42, true, 2024-01-31, text)")
    spark = parser.add_mutually_exclusive_group()
    spark.add_argument("--master", help="Spark master of a local session (default: $MAILGEM_SPARK_MASTER, else local[2])")
    spark.add_argument("--remote", metavar="sc://HOST:PORT",
                       help="use a Spark Connect server instead of a local session (needs mailgem[connect]; default: "
                            "$SPARK_REMOTE, as PySpark reads it, unless --master is given)")
    parser.add_argument("--conf", action="append", type=_spark_setting, default=[], metavar="KEY=VALUE",
                        help="a Spark setting for the session (repeatable), e.g. --conf spark.executor.memory=4g or "
                             "--conf spark.ui.enabled=true to watch the run at :4040")


def _spark_setting(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` of ``--conf`` → ``(KEY, VALUE)``, both as given."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: write KEY=VALUE, e.g. --conf spark.executor.memory=4g")
    return key.strip(), value


def _key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` → ``(KEY, VALUE)``, the value's text as given (read as YAML by the run)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: write KEY=VALUE, e.g. --param report_date=2024-01-31")
    return key.strip(), value


def parser() -> argparse.ArgumentParser:
    """The ``mailgem`` argument parser, every command with an example and the exit codes."""
    p = argparse.ArgumentParser(
        prog="mailgem", description="Send DataFrame reports by email from data pipelines.",
        epilog="example:\n  mailgem run examples/flights_delay_report.yaml --local\n\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"mailgem {_version()}")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log at DEBUG level; show Spark's own output and full stack traces")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _command(sub, "run", "run a job: read its source, transform it, send the Email gem's messages",
                   "mailgem run daily.yaml --fabric fabric.yaml --report-out report.csv")
    _job_options(run)
    run.add_argument("--outbox", type=Path, default=Path("outbox"),
                     help="with --local: folder for the messages the embedded server receives (default: outbox)")
    run.add_argument("--dry-run", action="store_true",
                     help="build every message and write it to --out, send nothing; report status dry_run")
    run.add_argument("--out", type=Path, default=Path("dry-run"),
                     help="with --dry-run: folder for the .eml and .html files (default: dry-run)")
    run.add_argument("--report-out", type=Path, metavar="PATH",
                     help="write the delivery report to PATH (.csv, .json/.jsonl as JSON lines, or .parquet); "
                          "checked before anything is sent")
    run.add_argument("--json", action="store_true",
                     help="print one JSON summary line (counts by status, connection, duration, report path) "
                          "instead of the report lines")

    val = _command(sub, "validate", "check a job without sending: every problem at once; exit 0 only when the "
                                    "run would start", "mailgem validate daily.yaml --fabric fabric.yaml")
    _job_options(val)
    val.add_argument("--schema-from-data", action="store_true",
                     help="start Spark to learn the transformed frame's columns (checks row.x in templates)")
    val.add_argument("--json", action="store_true", help="print the result as one JSON line")

    pre = _command(sub, "preview", "build the first messages exactly as run would and write them as .eml and "
                                   ".html; nothing is sent, no secret is read",
                   "mailgem preview daily.yaml --fabric fabric.yaml --limit 3 --open")
    _job_options(pre)
    pre.add_argument("--out", type=Path, default=Path("preview"), help="folder for the files (default: preview)")
    pre.add_argument("--limit", type=int, default=5, help="how many messages (default: 5)")
    pre.add_argument("--open", action="store_true", help="open the first message's .html in the browser")

    conn = _command(sub, "connection", "SMTP connection tools",
                    "mailgem connection test reports-smtp --fabric fabric.yaml")
    conn_sub = conn.add_subparsers(dest="action", required=True, metavar="ACTION")
    test = _command(conn_sub, "test", "connect, negotiate TLS, authenticate and check the sender without sending",
                    "mailgem connection test reports-smtp --fabric fabric.yaml")
    test.add_argument("name", help="the connection's name in the fabric")
    test.add_argument("--fabric", type=Path, default=_default_fabric(), metavar="FABRIC.yaml",
                      help=f"the fabric (default: ${FABRIC_ENV})")
    test.add_argument("--user", help="who tests (default: $MAILGEM_USER, else the OS login)")

    sec = _command(sub, "secrets", "manage the fabric's secret store", "mailgem secrets list --fabric fabric.yaml")
    sec_sub = sec.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text, example in (
        ("set", "store a secret; the value is read from stdin or a prompt, never from the command line",
         "mailgem secrets set gmail-app-password --fabric fabric.yaml"),
        ("delete", "remove a secret from the store", "mailgem secrets delete old-password --fabric fabric.yaml"),
        ("list", "list the secrets' names (never their values)", "mailgem secrets list --fabric fabric.yaml"),
    ):
        cmd = _command(sec_sub, action, text, example)
        if action != "list":
            cmd.add_argument("name", help="the secret's name (letters, digits, _ . - /)")
        cmd.add_argument("--fabric", type=Path, default=_default_fabric(), metavar="FABRIC.yaml",
                         help=f"the fabric whose store to use (default: ${FABRIC_ENV})")
    keygen = _command(sec_sub, "keygen", "generate a 256-bit key for an encrypted_file secret store",
                      "mailgem secrets keygen --key-file ~/.mailgem.key")
    keygen.add_argument("--key-file", type=Path, help="write the key to this new file (mode 0600) instead of stdout")

    schema = _command(sub, "schema", "print the JSON Schema of a job file, a fabric file or the Email gem's properties",
                      "mailgem schema fabric > fabric.schema.json")
    schema.add_argument("what", nargs="?", choices=("job", "fabric", "email"), default="job",
                        help="job (default: the whole job file), fabric, or email (the gem's properties)")
    _plugin_commands(sub)
    _verbose_after_commands(p)
    return p


def _verbose_after_commands(parser: argparse.ArgumentParser) -> None:
    """Accept ``-v`` after a command too (``mailgem run job.yaml -v``), on every command and action,
    plugins' included. Their ``-v`` has no default (``SUPPRESS``), so leaving it out keeps what
    ``mailgem -v`` set."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                if "-v" not in command._option_string_actions:
                    command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                         help="as mailgem -v: log at DEBUG level, show Spark's output and stack traces")
                _verbose_after_commands(command)


# Commands that live above the runner (``mailgem ui``) register through this entry-point group,
# so the runner never imports them (design.md: nothing below imports anything above it).
PLUGIN_GROUP = "mailgem.commands"


@functools.cache
def _plugin_points() -> tuple[Any, ...]:
    # Looked up once a process: finding them reads every installed distribution's metadata
    # (~50 ms with the extras installed), which tests and the UI that call main() many times would pay each time.
    from importlib.metadata import entry_points

    return tuple(sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name))


def _plugin_commands(sub: Any) -> None:
    """Add the commands of the ``mailgem.commands`` entry points: each names a module with
    ``add_parser(sub, command)`` (standard library only at import) and ``run(args) -> int``."""
    for point in _plugin_points():
        try:
            module = point.load()
        except Exception as exc:  # noqa: BLE001 - a broken add-on must not take the other commands with it
            print(f"mailgem: the command {point.name!r} ({point.value}) could not be loaded: {type(exc).__name__}: "
                  f"{exc}; reinstall mailgem", file=sys.stderr)
            continue
        cmd = module.add_parser(sub, _command)
        cmd.set_defaults(plugin=point.value)
