"""``mailgem run``: every check before Spark (the connection's session included), then the source,
the transform and the Email gem; the delivery report and an exit code a scheduler can act on."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from mailgem.connections.precheck import ChainCheck
from mailgem.gems.email.content.preview import write_previews
from mailgem.gems.email.gem import DeliveryError, EmailGem
from mailgem.gems.email.run.report import to_pandas, with_nullable_ints
from mailgem.gems.email.run.skip_rule import RUN_KEY
from mailgem.gems.email.run.status import DeliveryStatus

from .output import Output, check_report_path, exit_code, fail, record, report_lines, write_report_or_print
from .parser import EXIT_FAILED, EXIT_UNREACHABLE
from .signals import Signals
from .steps import SparkJobError, config_failure, make_gem, preflight, read_frames, spark_errors, start_spark, target

__all__ = ["cmd_run"]

# Messages the server accepted (for all recipients or some).
_WENT_OUT = (DeliveryStatus.SENT, DeliveryStatus.PARTIAL)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the job (see the module docstring); returns the exit code."""
    started = time.monotonic()
    signals: Signals = args.signals
    out = Output(args.json)
    if args.report_out is not None:
        check_report_path(args.report_out)
    pre = preflight(args, out, read_secrets=not args.dry_run)
    if not pre.ok:
        return config_failure(args, out, [str(f) for f in pre.errors], pre)
    job = pre.job
    assert job is not None
    with target(args, pre, out) as (fabric, server, connection):
        gem = make_gem(pre, fabric, connection, args.user)
        args.gem = gem  # what was sent so far, should anything unexpected end the run
        if not args.dry_run:
            # One session now, before Spark starts: a closed port or a refused login or sender
            # ends the run in seconds, and its verdict holds for the whole run.
            check = gem.check_connection()
            for warning in check.warnings():
                out.note(f"mailgem: warning: {warning}")
            if not check.ok:
                return _unreachable(args, out, job.name, connection, check, started)
        spark, log_file = start_spark(args, job.name)
        frame, in1 = read_frames(args, pre, spark, log_file)
        error: DeliveryError | None = None
        if args.dry_run:
            report = _dry_run(gem, frame, in1, args.out, out, connection)
        else:
            signals.sending = True  # from here a signal asks the run to stop; it does not end it
            try:
                with spark_errors(args, "sending", None, log_file):
                    result = gem.apply(spark, frame, in1, stop=signals.stop)
            except DeliveryError as exc:
                error, result = exc, exc.report
            except SparkJobError as exc:  # messages may have gone out: not a configuration error
                return fail(args, f"{exc}\n  Spark's workers may have sent messages before it; with a ledger, a "
                                  "re-run with the same run key sends only what was not accepted", code=EXIT_FAILED)
            report = with_nullable_ints(result.toPandas())
        received = [m.path for m in server.messages] if server is not None else []
    if error is not None:
        out.note(f"mailgem: delivery stopped (on_error: stop): {error}")
    return _finish(args, out, job.name, connection, report, received, signals, started)


def _finish(args: argparse.Namespace, out: Output, job: str, connection: str, report: Any, received: list[Path],
            signals: Signals, started: float) -> int:
    """Write and print the report; the exit code (a signal's, when one stopped the run)."""
    code = exit_code(report)
    report_error = write_report_or_print(report, args.report_out, out) if args.report_out is not None else None
    if report_error is not None:
        code = max(code, EXIT_FAILED)
    if signals.exit_code is not None:
        code = signals.exit_code
    counts = {str(k): int(v) for k, v in report["status"].value_counts().items()}
    fields: dict[str, Any] = {
        "job": job, "exit_code": code, "messages": len(report), "counts": counts, "connection": connection,
        "dry_run": args.dry_run, "duration_s": round(time.monotonic() - started, 3),
        "report": str(args.report_out) if args.report_out and report_error is None else None}
    if signals.signum is not None:
        fields["stopped_by"] = signals.name
    run_skipped = _skipped_by_skip_if(report)
    if run_skipped is not None:
        fields["skipped_by"] = "skip_if"
    if report_error is not None:
        fields["report_error"] = report_error
    args.report = report  # for a caller in Python (.call): the failed rows' error lines
    record(args, fields)
    if args.json:
        if report_error is not None:
            fields = {**fields, "rows": report.to_dict(orient="records")}
        out.json_line(fields)
        return code
    report_lines(report, out)
    if run_skipped is not None:
        out.say(f"Run skipped by skip_if: {run_skipped}")
    if received:
        where = "the embedded SMTP server (127.0.0.1, STARTTLS + AUTH)"
        out.say(f"Delivered to {where}; saved as {received[0]}" if len(received) == 1 else
                f"Delivered {len(received)} messages to {where}; saved in {args.outbox}/ ({received[0].name} ...)")
    if args.report_out is not None and report_error is None:
        out.say(f"Delivery report: {args.report_out}")
    if signals.signum is not None:
        statuses = report["status"]
        log_file = getattr(args, "spark_log", None)
        if log_file is not None:
            args.keep_spark_log = True  # what Spark said while it was stopped, kept for the user
        out.note(f"mailgem: stopped by {signals.name}: {int(statuses.isin(_WENT_OUT).sum()):,} message(s) "
                 f"went out, {int((statuses == DeliveryStatus.NOT_STARTED).sum()):,} not started; re-run with the same run key to "
                 "send the rest (with a ledger, nothing accepted is sent twice)"
                 + (f"; Spark's own log: {log_file}" if log_file is not None else ""))
    elif code == EXIT_UNREACHABLE:
        out.note("mailgem: nothing could be sent: the connection failed (see the errors above)")
    return code


def _unreachable(args: argparse.Namespace, out: Output, job: str, connection: str, check: ChainCheck,
                 started: float) -> int:
    """The connection failed its check before Spark started: exit 3, nothing read or sent (so no
    report file: it would have no rows)."""
    message = f"connection {connection!r} failed before the run started: {check.error}"
    out.note(f"mailgem: {message}")
    out.note("mailgem: nothing was sent")
    fields = {"job": job, "exit_code": EXIT_UNREACHABLE, "messages": 0, "counts": {}, "connection": connection,
              "dry_run": False, "duration_s": round(time.monotonic() - started, 3), "report": None, "errors": [message]}
    record(args, fields)
    if args.json:
        out.json_line(fields)
    return EXIT_UNREACHABLE


def _skipped_by_skip_if(report: Any) -> str | None:
    """The reason when ``skip_if`` skipped the whole run (its report's one row), else ``None``."""
    if len(report) != 1:
        return None
    row = report.iloc[0]
    return str(row["error"]) if row["message_key"] == RUN_KEY and row["status"] == DeliveryStatus.SKIPPED_BY_RULE else None


def _dry_run(gem: EmailGem, frame: Any, in1: Any, folder: Path, out: Output, connection: str) -> Any:
    rows = [b.dry_run_row(connection) for b, _ in write_previews(gem.build(frame, in1=in1), folder)]
    skipped = sum(1 for r in rows if r.status == DeliveryStatus.SKIPPED_BY_RULE)
    out.say(f"Dry run: {len(rows) - skipped:,} message(s) built" + (f", {skipped:,} skipped by rule" if skipped else "")
            + f", none sent; written to {folder}/")
    return to_pandas(rows)
