"""The ``mailgem`` command. ``mailgem --help`` and ``mailgem COMMAND --help`` describe each one.

Every command that takes a job checks everything it can before Spark starts (see
:mod:`mailgem.gems.preflight`): the job and fabric files, the connection, the user's access, the secret,
the source and every template. A job runs against its fabric; the embedded local SMTP server is
used only when the job names the ``local`` connection or ``--local`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import os
import sys
import time
import traceback
import webbrowser
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from mailgem.connections.errors import MailgemError
from mailgem.connections.sync import run_sync
from mailgem.fabric.errors import AccessDeniedError, FabricConfigError
from mailgem.fabric.loader import LOCAL_CONNECTION, load_fabric
from mailgem.fabric.model import Fabric
from mailgem.fabric.secrets import generate_key

from .email.gem import DeliveryError, EmailGem
from .email.content.preview import write_previews
from .email.run.report import (
    CONNECTION_ERRORS,
    DELIVERED,
    DeliveryRow,
    to_pandas,
    with_nullable_ints,
)
from .email.validate import validate
from .preflight import FABRIC_ENV, Finding, Preflight, check_job, default_fabric, special_domains

__all__ = ["main", "EXIT_OK", "EXIT_FAILED", "EXIT_CONFIG", "EXIT_UNREACHABLE", "exit_code"]

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_CODES = """exit codes:
  0  every message was sent, or skipped by rule (empty frame, accepted in an earlier run)
  1  some messages failed, were partly refused or deferred (the delivery report says which and why)
  2  configuration or input error: job, fabric, access, secret, source, template, SQL; nothing sent
     (also when every message failed on a template error that only the data revealed)
  3  nothing could be sent: the connection failed (unreachable, TLS, AUTH, refused sender)"""
REPORT_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}

log = logging.getLogger("mailgem.cli")


class UsageError(MailgemError):
    """A command-line mistake (exit 2)."""


def _version() -> str:
    from mailgem import __version__

    return __version__


# -- arguments --------------------------------------------------------------------------------

def _command(sub: Any, name: str, help_text: str, example: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                          epilog=f"example:\n  {example}\n\n{EXIT_CODES}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _job_options(parser: argparse.ArgumentParser, *, local: bool = True) -> None:
    parser.add_argument("job", type=Path, help="the job YAML file (source, transform, params, email)")
    where = parser.add_mutually_exclusive_group()
    default = default_fabric()
    where.add_argument("--fabric", type=Path, default=default, metavar="FABRIC.yaml",
                       help=f"the fabric holding the job's connection (default: ${FABRIC_ENV})")
    if local:
        where.add_argument("--local", action="store_true",
                           help="use the embedded local SMTP server instead of the job's connection")
    parser.add_argument("--user", help="who runs the job (default: $MAILGEM_USER, else the OS login)")
    parser.add_argument("--master", default=os.environ.get("MAILGEM_SPARK_MASTER", "local[2]"),
                        help="Spark master (default: $MAILGEM_SPARK_MASTER, else local[2])")


def _parser() -> argparse.ArgumentParser:
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
                     help="write the delivery report to PATH (.csv, .json/.jsonl as JSON lines, or .parquet)")
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

    conn = _command(sub, "connection", "SMTP connection tools", "mailgem connection test reports-smtp --fabric fabric.yaml")
    conn_sub = conn.add_subparsers(dest="action", required=True, metavar="ACTION")
    test = _command(conn_sub, "test", "connect, negotiate TLS, authenticate and check the sender without sending",
                    "mailgem connection test reports-smtp --fabric fabric.yaml")
    test.add_argument("name", help="the connection's name in the fabric")
    test.add_argument("--fabric", type=Path, default=default_fabric(), metavar="FABRIC.yaml",
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
        cmd.add_argument("--fabric", type=Path, default=default_fabric(), metavar="FABRIC.yaml",
                         help=f"the fabric whose store to use (default: ${FABRIC_ENV})")
    keygen = _command(sec_sub, "keygen", "generate a 256-bit key for an encrypted_file secret store",
                      "mailgem secrets keygen --key-file ~/.mailgem.key")
    keygen.add_argument("--key-file", type=Path, help="write the key to this new file (mode 0600) instead of stdout")

    schema = _command(sub, "schema", "print the JSON Schema of a job file, a fabric file or the Email gem's properties",
                      "mailgem schema fabric > fabric.schema.json")
    schema.add_argument("what", nargs="?", choices=("job", "fabric", "email"), default="job",
                        help="job (default: the whole job file), fabric, or email (the gem's properties)")
    return p


# -- output -----------------------------------------------------------------------------------

class Output:
    """Human lines on stdout, or (``--json``) nothing but one JSON line at the end."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def say(self, text: str = "") -> None:
        if not self.as_json:
            print(text)

    def note(self, text: str) -> None:
        """Warnings and side notes: stderr, so stdout stays the result."""
        print(text, file=sys.stderr)


def _print_findings(pre: Preflight, out: Output) -> None:
    for finding in pre.findings:
        out.note(f"mailgem: {finding}")


def _report_lines(report: Any, out: Output, limit: int = 20) -> None:
    """One line per message (the first ``limit``); each distinct error once, with its count."""
    import pandas as pd

    errors: dict[str, list[str]] = {}
    for row in report.itertuples():
        if row.error and row.status not in ("already_sent", "skipped"):
            errors.setdefault(row.error, []).append(row.message_key)
    repeated = {e: n for n, e in enumerate((e for e, keys in errors.items() if len(keys) > 1), 1)}
    for row in report.head(limit).itertuples():
        detail = f"{row.reply_code} {row.enhanced_status or ''}".strip() if not pd.isna(row.reply_code) else ""
        size = f" ({int(row.size_bytes):,} bytes, {row.message_id})" if not pd.isna(row.size_bytes) else ""
        why = ""
        if row.error:
            why = f" - error #{repeated[row.error]} (below)" if row.error in repeated else f" - {row.error}"
        out.say(f"{row.message_key}: {row.status} {detail} to {row.recipients}{size}{why}".replace("  ", " "))
    if len(report) > limit:
        out.say(f"... and {len(report) - limit:,} more")
    for error, n in repeated.items():
        out.say(f"error #{n} ({len(errors[error]):,} messages): {error}")
    counts = report["status"].value_counts()
    out.say(f"{len(report):,} message(s): " + ", ".join(f"{int(n):,} {status}" for status, n in counts.items()))


def exit_code(report: Any) -> int:
    """The run's exit code from its delivery report (see ``EXIT_CODES``)."""
    statuses = set(report["status"])
    if statuses <= {"sent", "already_sent", "skipped", "dry_run"}:
        return EXIT_OK
    failed = report[report["status"] == "failed"]
    if not report["status"].isin(DELIVERED).any() and len(failed):
        if failed["error_type"].isin(CONNECTION_ERRORS).all():
            return EXIT_UNREACHABLE
        if (failed["error_type"] == "TemplateError").all():
            return EXIT_CONFIG  # a template no message could render is the job's mistake, not delivery's
    return EXIT_FAILED


def write_report(report: Any, path: Path) -> None:
    """Write the delivery report: ``.csv``, ``.json``/``.jsonl`` (JSON lines) or ``.parquet``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = REPORT_FORMATS[path.suffix.lower()]
    if kind == "csv":
        report.to_csv(path, index=False)
    elif kind == "json":
        report.to_json(path, orient="records", lines=True, date_format="iso")
    else:
        report.to_parquet(path, index=False)


# -- commands ---------------------------------------------------------------------------------

def _preflight(args: argparse.Namespace, out: Output, *, read_secrets: bool) -> Preflight:
    pre = check_job(args.job, fabric_file=args.fabric, local=getattr(args, "local", False), user=args.user,
                    read_secrets=read_secrets)
    _print_findings(pre, out)
    return pre


@contextlib.contextmanager
def _spark_errors(args: argparse.Namespace, what: str, sql: str | None, log_file: Path | None) -> Iterator[None]:
    """Turn a Spark error into its one useful line, naming the job file, the step and the SQL."""
    try:
        yield
    except Exception as exc:
        if not _is_spark_error(exc):
            raise
        where = f"\n  SQL: {' '.join(sql.split())}" if sql else ""
        raise SparkJobError(f"{args.job}: {what}: {_spark_failure(args, exc, log_file, where, sep=chr(10) + '  ')}") from None


def _is_spark_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("pyspark", "py4j"))


def _spark_failure(args: argparse.Namespace, exc: BaseException, log_file: Path | None, detail: str = "",
                   sep: str = " ") -> str:
    """A Spark error's one useful line, ``detail`` (the SQL), and where Spark's own log is (kept
    for the user); with ``-v`` the full trace is printed first."""
    from .spark import spark_error_line

    if args.verbose:
        traceback.print_exc()
    args.keep_spark_log = True
    more = f"{sep}(Spark's own log: {log_file}; -v shows the full trace)" if log_file else ""
    return f"{spark_error_line(exc)}{detail}{more}"


class SparkJobError(MailgemError):
    """Spark refused the job's source or SQL (exit 2)."""


def _spark(args: argparse.Namespace, app: str) -> tuple[Any, Path | None]:
    from .spark import local_spark, new_log_file, quiet_python_loggers

    quiet_python_loggers(args.verbose)
    log_file = None if args.verbose else new_log_file()
    args.spark_log = log_file  # removed after the command unless a Spark error points at it
    return local_spark(args.master, app_name=f"mailgem:{app}", log_file=log_file), log_file


def _frame(args: argparse.Namespace, pre: Preflight, spark: Any, log_file: Path | None) -> Any:
    from .source import read_source

    job = pre.job
    assert job is not None
    with _spark_errors(args, "source", job.source.sql, log_file):
        frame = read_source(spark, job.source, pre.source)
        frame.columns  # noqa: B018 - analysis happens here, so its errors are named as the source's
    if job.transform:
        with _spark_errors(args, "transform", job.transform, log_file):
            frame.createOrReplaceTempView("source")
            frame = spark.sql(job.transform)
            frame.columns  # noqa: B018
    return frame


@contextlib.contextmanager
def _target(args: argparse.Namespace, pre: Preflight, out: Output) -> Iterator[tuple[Fabric, Any, str]]:
    """The fabric to send through, the embedded server (or ``None``) and the connection's name."""
    from mailgem.fabric.local import local_fabric

    job = pre.job
    assert job is not None
    if not pre.local:
        assert pre.fabric is not None
        yield pre.fabric, None, job.email.connection
        return
    if job.email.connection != LOCAL_CONNECTION:
        out.note(f"--local: sending through the embedded local SMTP server instead of connection "
                 f"{job.email.connection!r}.")
    with local_fabric(args.outbox if hasattr(args, "outbox") else Path("outbox"), user=args.user) as local_run:
        yield local_run.fabric, local_run.server, LOCAL_CONNECTION


def _gem(pre: Preflight, fabric: Fabric, connection: str, user: str | None) -> EmailGem:
    job = pre.job
    assert job is not None
    props = job.email if connection == job.email.connection else job.email.model_copy(update={"connection": connection})
    return EmailGem(props, fabric, user=user, name=job.name, params=job.params)


def _cmd_run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    out = Output(args.json)
    if args.report_out is not None and args.report_out.suffix.lower() not in REPORT_FORMATS:
        raise UsageError(f"--report-out {args.report_out}: use a .csv, .json, .jsonl or .parquet file name")
    pre = _preflight(args, out, read_secrets=not args.dry_run)
    if not pre.ok:
        return _config_failure(args, out, [str(f) for f in pre.errors], pre)
    job = pre.job
    assert job is not None
    spark, log_file = _spark(args, job.name)
    frame = _frame(args, pre, spark, log_file)
    with _target(args, pre, out) as (fabric, server, connection):
        gem = _gem(pre, fabric, connection, args.user)
        error: DeliveryError | None = None
        if args.dry_run:
            report = _dry_run(gem, frame, args.out, out, connection)
        else:
            try:
                with _spark_errors(args, "sending", None, log_file):
                    result = gem.apply(spark, frame)
            except DeliveryError as exc:
                error, result = exc, exc.report
            report = with_nullable_ints(result.toPandas())
        received = [m.path for m in server.messages] if server is not None else []
    if error is not None:
        out.note(f"mailgem: delivery stopped (on_error: stop): {error}")
    if args.report_out is not None:
        write_report(report, args.report_out)
    code = exit_code(report)
    if args.json:
        counts = {str(k): int(v) for k, v in report["status"].value_counts().items()}
        print(json.dumps({"job": job.name, "exit_code": code, "messages": len(report), "counts": counts,
                          "connection": connection, "dry_run": args.dry_run,
                          "duration_s": round(time.monotonic() - started, 3),
                          "report": str(args.report_out) if args.report_out else None}))
        return code
    _report_lines(report, out)
    if received:
        where = "the embedded SMTP server (127.0.0.1, STARTTLS + AUTH)"
        out.say(f"Delivered to {where}; saved as {received[0]}" if len(received) == 1 else
                f"Delivered {len(received)} messages to {where}; saved in {args.outbox}/ ({received[0].name} ...)")
    if args.report_out is not None:
        out.say(f"Delivery report: {args.report_out}")
    if code == EXIT_UNREACHABLE:
        out.note("mailgem: nothing could be sent: the connection failed (see the errors above)")
    return code


def _dry_run(gem: EmailGem, frame: Any, folder: Path, out: Output, connection: str) -> Any:
    rows = []
    for b, _ in write_previews(gem.build(frame), folder):
        if b.error is not None:
            rows.append(DeliveryRow(b.key, "failed", connection=connection, error=str(b.error),
                                    error_type=type(b.error).__name__))
        else:
            rows.append(DeliveryRow(b.key, "dry_run", recipients=", ".join(b.recipients), size_bytes=b.size_bytes,
                                    message_id=str(b.message["Message-ID"]) if b.message else None,
                                    connection=connection))
    out.say(f"Dry run: {len(rows):,} message(s) built, none sent; written to {folder}/")
    return to_pandas(rows)


def _config_failure(args: argparse.Namespace, out: Output, errors: list[str], pre: Preflight | None = None) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"job": pre.job.name if pre and pre.job else str(getattr(args, "job", "")),
                          "exit_code": EXIT_CONFIG, "errors": errors}))
    else:
        out.note(f"mailgem: {len(errors)} problem(s); nothing was sent" if len(errors) > 1 else
                 "mailgem: nothing was sent")
    return EXIT_CONFIG


def _cmd_validate(args: argparse.Namespace) -> int:
    out = Output(args.json)
    pre = _preflight(args, out, read_secrets=True)
    findings = list(pre.findings)
    if pre.ok and args.schema_from_data:
        assert pre.job is not None
        spark, log_file = _spark(args, pre.job.name)
        try:
            frame = _frame(args, pre, spark, log_file)
        except SparkJobError as exc:
            findings.append(Finding("error", str(exc)))
        else:
            columns = {f.name: f.dataType.simpleString() for f in frame.schema.fields}
            for d in validate(pre.job.email, columns, job=pre.job.name, params=pre.job.params,
                              special_domains=special_domains(pre)):
                finding = Finding(d.severity, f"{args.job}: email.{d.path}: {d.message}")
                if finding not in findings:
                    out.note(f"mailgem: {finding}")
                    findings.append(finding)
    errors = [f for f in findings if f.severity == "error"]
    if args.json:
        print(json.dumps({"job": str(args.job), "exit_code": EXIT_CONFIG if errors else EXIT_OK,
                          "errors": [str(f) for f in errors],
                          "warnings": [str(f) for f in findings if f.severity == "warning"]}))
    else:
        out.say(f"{args.job}: {len(errors)} error(s); the run would not start" if errors else
                f"{args.job}: OK, the run would start" + (f" ({len(findings)} warning(s))" if findings else ""))
    return EXIT_CONFIG if errors else EXIT_OK


def _cmd_preview(args: argparse.Namespace) -> int:
    out = Output(False)
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    pre = _preflight(args, out, read_secrets=False)
    if not pre.ok:
        return _config_failure(args, out, [str(f) for f in pre.errors], pre)
    assert pre.job is not None
    spark, log_file = _spark(args, pre.job.name)
    frame = _frame(args, pre, spark, log_file)
    first_html = None
    failed = 0
    with _target(args, pre, out) as (fabric, _, connection):
        gem = _gem(pre, fabric, connection, args.user)
        for b, html_path in write_previews(gem.build(frame, args.limit), args.out):
            out.say(b.summary())
            if html_path is not None:
                out.say(f"  {html_path.with_suffix('.eml')}  {html_path}")
                first_html = first_html or html_path
            else:
                failed += 1
    out.say(f"Preview: nothing was sent; files in {args.out}/")
    if args.open and first_html is not None:
        webbrowser.open(first_html.resolve().as_uri())
    return EXIT_FAILED if failed else EXIT_OK


def _fabric(args: argparse.Namespace) -> Fabric:
    if args.fabric is None:
        raise FabricConfigError(f"no fabric: pass --fabric FABRIC.yaml or set {FABRIC_ENV}")
    return load_fabric(args.fabric)


def _cmd_connection_test(args: argparse.Namespace) -> int:
    transport = _fabric(args).transport(args.name, args.user)
    report = run_sync(transport.check())
    print("\n".join(report.lines()))
    return EXIT_OK if report.ok else EXIT_UNREACHABLE


def _read_secret_value(name: str) -> SecretStr:
    if sys.stdin.isatty():
        value = getpass.getpass(f"Value for secret {name!r}: ")
    else:
        value = sys.stdin.read().rstrip("\r\n")
    if not value:
        raise MailgemError(f"no value given for secret {name!r}: pipe it on stdin or type it at the prompt")
    return SecretStr(value)


def _keygen(key_file: Path | None) -> int:
    key = generate_key()
    if key_file is None:
        print(key)
        return EXIT_OK
    if not key_file.parent.is_dir():
        raise UsageError(f"--key-file {key_file}: folder {key_file.parent} does not exist; create it first")
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"--key-file {key_file} already exists; it may hold the key of an existing store, so it is "
                         "never overwritten: choose a new file name, or delete the old one knowingly") from None
    except OSError as exc:
        raise UsageError(f"--key-file {key_file}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    print(f"wrote a new 256-bit key to {key_file} (mode 0600); point the store's key_file at it")
    return EXIT_OK


def _cmd_secrets(args: argparse.Namespace) -> int:
    if args.action == "keygen":
        return _keygen(args.key_file)
    store = _fabric(args).store()
    if args.action == "set":
        store.set(args.name, _read_secret_value(args.name))
        print(f"stored secret {args.name!r} in {store!r}")
    elif args.action == "delete":
        store.delete(args.name)
        print(f"deleted secret {args.name!r} from {store!r}")
    else:
        for name in store.names():
            print(name)
    return EXIT_OK


def _cmd_schema(args: argparse.Namespace) -> int:
    from .job import JobSpec

    model = {"job": JobSpec, "fabric": Fabric}.get(args.what)
    schema = model.model_json_schema() if model is not None else EmailGem.schema()
    print(json.dumps(schema, indent=2))
    return EXIT_OK


def _dispatch(args: argparse.Namespace) -> int:
    commands = {"run": _cmd_run, "validate": _cmd_validate, "preview": _cmd_preview,
                "connection": _cmd_connection_test, "secrets": _cmd_secrets, "schema": _cmd_schema}
    return commands[args.command](args)


def _fail(args: argparse.Namespace, message: str) -> int:
    """A configuration or input error found while running: stderr, and the JSON line with ``--json``."""
    print(f"mailgem: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"job": str(getattr(args, "job", "")), "exit_code": EXIT_CONFIG, "errors": [message]}))
    return EXIT_CONFIG


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mailgem`` console script; returns the exit code (see ``EXIT_CODES``)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(args)
    except BrokenPipeError:
        # `mailgem schema | head`: the reader left; end quietly, and keep Python's exit-time flush quiet too.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except AccessDeniedError as exc:
        return _fail(args, f"access denied: {exc}")
    except MailgemError as exc:
        if args.verbose:
            traceback.print_exc()
        return _fail(args, str(exc))
    except Exception as exc:
        if not _is_spark_error(exc):
            raise
        # Spark's own errors (a file Spark cannot read, a failed stage): its one useful line.
        return _fail(args, f"Spark could not run the job: {_spark_failure(args, exc, getattr(args, 'spark_log', None))}")
    finally:
        log_file = getattr(args, "spark_log", None)
        if log_file is not None and not getattr(args, "keep_spark_log", False):
            with contextlib.suppress(OSError):
                log_file.unlink()


if __name__ == "__main__":
    sys.exit(main())
