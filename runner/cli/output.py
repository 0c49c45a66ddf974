"""What the ``mailgem`` command prints and writes: result lines on stdout (or one JSON line), notes on
stderr, the delivery report's lines and file, and the run's exit code."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from mailgem.connections.errors import MailgemError

from .parser import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, REPORT_FORMATS

__all__ = [
    "Output",
    "UsageError",
    "check_report_path",
    "exit_code",
    "fail",
    "record",
    "report_lines",
    "write_report",
    "write_report_or_print",
]


class UsageError(MailgemError):
    """A command-line mistake (exit 2)."""


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

    @staticmethod
    def json_line(fields: dict[str, Any]) -> None:
        print(json.dumps(fields, default=str))


def record(args: Any, fields: dict[str, Any]) -> None:
    """Keep the run's summary (the ``--json`` line's fields) on ``args``, printed or not: what a
    caller in Python gets back (:func:`~.call.run_job_file`)."""
    args.summary = fields


def fail(args: Any, message: str, code: int = EXIT_CONFIG, **fields: Any) -> int:
    """A command's error: one line on stderr, and the JSON line with ``--json``; returns ``code``."""
    print(f"mailgem: {message}", file=sys.stderr)
    summary = {"job": str(getattr(args, "job", "")), "exit_code": code, "errors": [message], **fields}
    record(args, summary)
    if getattr(args, "json", False):
        Output.json_line(summary)
    return code


def report_lines(report: Any, out: Output, limit: int = 20) -> None:
    """One line per message (the first ``limit``); each distinct error once, with its count."""
    import pandas as pd

    # Imported here: an early failure's message imports no gem.
    from mailgem.gems.email.run.status import DeliveryStatus as S

    notes = (S.ALREADY_SENT, S.SKIPPED, S.SKIPPED_BY_RULE, S.NOT_STARTED)  # their error text says why, no failure
    errors: dict[str, list[str]] = {}
    for row in report.itertuples():
        if row.error and row.status not in notes:
            errors.setdefault(row.error, []).append(row.message_key)
    repeated = {e: n for n, e in enumerate((e for e, keys in errors.items() if len(keys) > 1), 1)}
    for row in report.head(limit).itertuples():
        detail = f"{row.reply_code} {row.enhanced_status or ''}".strip() if not pd.isna(row.reply_code) else ""
        size = f" ({int(row.size_bytes):,} bytes, {row.message_id})" if not pd.isna(row.size_bytes) else ""
        why = ""
        if row.error:
            why = f" - error #{repeated[row.error]} (below)" if row.error in repeated else f" - {row.error}"
        if row.notes:
            why += f" - note: {row.notes}"
        out.say(f"{row.message_key}: {row.status} {detail} to {row.recipients}{size}{why}".replace("  ", " "))
    if len(report) > limit:
        out.say(f"... and {len(report) - limit:,} more")
    for error, n in repeated.items():
        out.say(f"error #{n} ({len(errors[error]):,} messages): {error}")
    counts = report["status"].value_counts()
    out.say(f"{len(report):,} message(s): " + ", ".join(f"{int(n):,} {status}" for status, n in counts.items()))


def exit_code(report: Any) -> int:
    """The run's exit code from its delivery report (see :data:`~.parser.EXIT_CODES`)."""
    from mailgem.gems.email.content.render import TemplateError
    from mailgem.gems.email.run.report import CONNECTION_ERROR_NAMES, DELIVERED
    from mailgem.gems.email.run.status import DeliveryStatus as S

    statuses = set(report["status"])
    if statuses <= {S.SENT, S.ALREADY_SENT, S.SKIPPED, S.SKIPPED_BY_RULE, S.DRY_RUN}:
        return EXIT_OK
    failed = report[report["status"] == S.FAILED]
    if not report["status"].isin(DELIVERED).any() and len(failed):
        if failed["error_type"].isin(CONNECTION_ERROR_NAMES).all():
            return EXIT_UNREACHABLE
        if (failed["error_type"] == TemplateError.__name__).all():
            return EXIT_CONFIG  # a template no message could render is the job's mistake, not delivery's
    return EXIT_FAILED


def check_report_path(path: Path) -> None:
    """Make sure ``--report-out PATH`` can be written, before anything is sent.

    Raises:
        UsageError: an unknown suffix, a folder where the file would be, a file where a folder
            would be, or no permission to write there (the message says which).
    """
    if path.suffix.lower() not in REPORT_FORMATS:
        raise UsageError(f"--report-out {path}: use a .csv, .json, .jsonl or .parquet file name")
    if path.is_dir():
        raise UsageError(f"--report-out {path}: that is a folder; name a file in it, e.g. {path / 'report.csv'}")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise UsageError(f"--report-out {path}: the file exists and cannot be written (permissions)")
        return
    folder = path.parent
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"--report-out {path}: {folder} is a file, not a folder; choose another path")
    if missing:  # the folders are made when the report is written
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"--report-out {path}: cannot create the folder for it in {folder} (permissions)")
        return
    try:
        # Proves the folder takes new files (permissions, a read-only mount): made and removed at once.
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".mailgem-report-check-"):
            pass
    except OSError as exc:
        raise UsageError(f"--report-out {path}: cannot create files in {folder}: {exc.strerror}") from None


def write_report(report: Any, path: Path) -> None:
    """Write the delivery report: ``.csv``, ``.json``/``.jsonl`` (JSON lines) or ``.parquet``.

    Raises:
        OSError: the file could not be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = REPORT_FORMATS[path.suffix.lower()]
    if kind == "csv":
        report.to_csv(path, index=False)
    elif kind == "json":
        report.to_json(path, orient="records", lines=True, date_format="iso")
    else:
        report.to_parquet(path, index=False)


def write_report_or_print(report: Any, path: Path, out: Output) -> str | None:
    """Write the report to ``path``; when that fails after sending, print it on stdout (CSV; in
    the JSON line with ``--json``, by the caller) and return why, else ``None``."""
    try:
        write_report(report, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)  # never leave half a report behind
        reason = f"could not write the delivery report to {path}: {exc.strerror or exc}"
        out.note(f"mailgem: {reason}; it is printed on stdout instead")
        if not out.as_json:
            report.to_csv(sys.stdout, index=False)
        return reason
    return None
