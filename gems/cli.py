"""The ``mailgem`` command.

    mailgem run JOB.yaml [--fabric FABRIC.yaml | --local] [--user NAME] [--outbox DIR]
    mailgem validate JOB.yaml
    mailgem connection test NAME [--fabric FABRIC.yaml] [--user NAME]
    mailgem secrets set NAME [--fabric FABRIC.yaml]      (value from stdin or a prompt, never argv)
    mailgem secrets list [--fabric FABRIC.yaml]          (names only)
    mailgem secrets keygen [--key-file PATH]
    mailgem schema

``--fabric`` defaults to ``$MAILGEM_FABRIC``. A job runs against its fabric; the embedded local
SMTP server is used only when the job names the ``local`` connection or ``--local`` is given, so
a scheduled run never ends up somewhere its job does not say.

Exit codes: 0 success, 1 delivery failed, 2 configuration or access error.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from pathlib import Path

from pydantic import SecretStr

from connections.errors import MailgemError
from connections.sync import run_sync
from fabric.errors import AccessDeniedError, FabricConfigError
from fabric.loader import LOCAL_CONNECTION, load_fabric
from fabric.local import local_fabric
from fabric.model import Fabric
from fabric.secrets import generate_key

from .email.gem import DeliveryError, EmailGem
from .email.validate import validate
from .job import load_job, run_job

__all__ = ["main"]


FABRIC_ENV = "MAILGEM_FABRIC"


def _fabric_option(parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
    default = os.environ.get(FABRIC_ENV)
    parser.add_argument("--fabric", type=Path, default=Path(default) if default else None,
                        help=f"fabric YAML (default: ${FABRIC_ENV})")


def _fabric(args: argparse.Namespace) -> Fabric:
    """The fabric named by ``--fabric`` or ``$MAILGEM_FABRIC``.

    Raises:
        FabricConfigError: neither is given, or the file is wrong.
    """
    if args.fabric is None:
        raise FabricConfigError(f"no fabric: pass --fabric FABRIC.yaml or set {FABRIC_ENV}")
    return load_fabric(args.fabric)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mailgem", description="Send DataFrame reports by email from pipelines.")
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a job: read data, transform, send the Email gem's report")
    run.add_argument("job", type=Path)
    where = run.add_mutually_exclusive_group()
    _fabric_option(where)
    where.add_argument("--local", action="store_true",
                       help="send through the embedded local SMTP server (saved in --outbox) instead of the "
                            "job's connection")
    run.add_argument("--user", help="who runs the job (default: $MAILGEM_USER or the OS login)")
    run.add_argument("--outbox", type=Path, default=Path("outbox"), help="embedded server's outbox folder")
    run.add_argument("--master", default=os.environ.get("MAILGEM_SPARK_MASTER", "local[2]"), help="Spark master")

    val = sub.add_parser("validate", help="check a job's Email gem properties without running it")
    val.add_argument("job", type=Path)

    conn = sub.add_parser("connection", help="SMTP connection tools")
    conn_sub = conn.add_subparsers(dest="action", required=True)
    test = conn_sub.add_parser("test", help="connect and authenticate without sending; print diagnostics")
    test.add_argument("name")
    _fabric_option(test)
    test.add_argument("--user")

    sec = sub.add_parser("secrets", help="manage the fabric's secret store")
    sec_sub = sec.add_subparsers(dest="action", required=True)
    s_set = sec_sub.add_parser("set", help="store a secret; the value is read from stdin or a prompt")
    s_set.add_argument("name")
    _fabric_option(s_set)
    s_list = sec_sub.add_parser("list", help="list secret names (never values)")
    _fabric_option(s_list)
    keygen = sec_sub.add_parser("keygen", help="generate a 256-bit key for an encrypted_file store")
    keygen.add_argument("--key-file", type=Path, help="write the key to this file (mode 0600) instead of stdout")

    sub.add_parser("schema", help="print the Email gem's properties as JSON Schema")
    return p


def _cmd_run(args: argparse.Namespace) -> int:
    from .spark import local_spark

    job = load_job(args.job)
    local = args.local or job.email.connection == LOCAL_CONNECTION
    if not local:
        if args.fabric is None:
            raise FabricConfigError(
                f"{args.job}: email.connection is {job.email.connection!r}, which lives in a fabric, and no fabric "
                f"was given: pass --fabric FABRIC.yaml or set {FABRIC_ENV}; to try the job on the embedded "
                "local SMTP server instead, pass --local")
        # Before Spark starts: the fabric, the connection, the user's access and its secrets.
        fabric = _fabric(args)
        fabric.transports(job.email.connection, args.user)
        spark = local_spark(args.master, app_name=f"mailgem:{job.name}")
        report = run_job(job, fabric, spark, user=args.user).toPandas()
        _print_report(report)
        return 0 if (report["status"] != "failed").all() else 1
    spark = local_spark(args.master, app_name=f"mailgem:{job.name}")
    with local_fabric(args.outbox, user=args.user) as local_run:
        if job.email.connection != LOCAL_CONNECTION:
            print(f"--local: sending through the embedded local SMTP server instead of connection "
                  f"{job.email.connection!r}.")
            job = job.model_copy(update={"email": job.email.model_copy(update={"connection": LOCAL_CONNECTION})})
        try:
            report = run_job(job, local_run.fabric, spark, user=args.user).toPandas()
        finally:
            received = [m.path for m in local_run.server.messages]
    _print_report(report)
    where = "the embedded SMTP server (127.0.0.1, STARTTLS + AUTH)"
    if len(received) == 1:
        print(f"Delivered to {where}; saved as {received[0]}")
    elif received:
        print(f"Delivered {len(received)} messages to {where}; saved in {args.outbox}/ ({received[0].name} ...)")
    return 0 if (report["status"] != "failed").all() else 1


def _print_report(report: object, limit: int = 20) -> None:
    """One line per message (the first ``limit``), then counts by status."""
    import pandas as pd

    assert isinstance(report, pd.DataFrame)
    for row in report.head(limit).itertuples():
        detail = f"{row.reply_code} {row.enhanced_status or ''}".strip() if not pd.isna(row.reply_code) else ""
        print(f"{row.message_key}: {row.status} {detail} to {row.recipients}"
              + (f" ({row.size_bytes:,} bytes, {row.message_id})" if not pd.isna(row.size_bytes) else "")
              + (f" - {row.error}" if row.error else ""))
    if len(report) > limit:
        print(f"... and {len(report) - limit:,} more")
    counts = report["status"].value_counts()
    print(f"{len(report):,} message(s): " + ", ".join(f"{n:,} {status}" for status, n in counts.items()))


def _cmd_validate(args: argparse.Namespace) -> int:
    job = load_job(args.job)
    problems = validate(job.email)
    for d in problems:
        print(d)
    print(f"{args.job}: {len(problems)} problem(s)" if problems else f"{args.job}: OK")
    return 2 if any(d.severity == "error" for d in problems) else 0


def _cmd_connection_test(args: argparse.Namespace) -> int:
    fab = _fabric(args)
    transport = fab.transport(args.name, args.user)
    report = run_sync(transport.check())
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def _read_secret_value(name: str) -> SecretStr:
    if sys.stdin.isatty():
        value = getpass.getpass(f"Value for secret {name!r}: ")
    else:
        value = sys.stdin.read().rstrip("\r\n")
    if not value:
        raise MailgemError(f"no value given for secret {name!r}: pipe it on stdin or type it at the prompt")
    return SecretStr(value)


def _cmd_secrets(args: argparse.Namespace) -> int:
    if args.action == "keygen":
        key = generate_key()
        if args.key_file:
            fd = os.open(args.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key + "\n")
            print(f"wrote a new 256-bit key to {args.key_file} (mode 0600); point the store's key_file at it")
        else:
            print(key)
        return 0
    store = _fabric(args).store()
    if args.action == "set":
        store.set(args.name, _read_secret_value(args.name))
        print(f"stored secret {args.name!r} in {store!r}")
    else:
        for name in store.names():
            print(name)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mailgem`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "pyspark"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "validate":
            return _cmd_validate(args)
        if args.command == "connection":
            return _cmd_connection_test(args)
        if args.command == "secrets":
            return _cmd_secrets(args)
        if args.command == "schema":
            print(json.dumps(EmailGem.schema(), indent=2))
            return 0
    except DeliveryError as exc:
        print(f"mailgem: delivery failed: {exc}", file=sys.stderr)
        return 1
    except AccessDeniedError as exc:
        print(f"mailgem: access denied: {exc}", file=sys.stderr)
        return 2
    except MailgemError as exc:
        print(f"mailgem: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # Spark's own errors (bad SQL, unreadable file) are user errors too: show them without a trace.
        if type(exc).__module__.startswith("pyspark"):
            print(f"mailgem: Spark could not run the job: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 2
        raise
    return 2


if __name__ == "__main__":
    sys.exit(main())

