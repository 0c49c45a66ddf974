"""``mailgem run`` called from Python, in this process: what a scheduler's task does (the Airflow
operator, :mod:`mailgem.airflow`). The very path of the command (its checks before Spark, its
exit codes, its report file and lines), and back a :class:`RunOutcome` instead of a JSON line.

In-process matters: a scheduler may hand its secrets only to the task's own process (Airflow
3's Variables and Connections come through the task's supervisor), and the run's fabric reads
them there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .app import run_command
from .parser import EXIT_OK, parser

__all__ = ["RunOutcome", "run_job_file"]

# Statuses whose rows' errors are a run's failures (already_sent, skipped and not_started say why
# in their error column, and that is no failure).
_FAILED = ("failed", "partial", "deferred")


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended.

    Attributes:
        exit_code: ``mailgem run``'s exit code (0 ok, 1 partial failure, 2 configuration error,
            3 connection failed before anything was sent, 130/143 stopped by a signal).
        summary: the fields of ``mailgem run --json``'s line (``job``, ``exit_code``, ``messages``,
            ``counts`` by status, ``connection``, ``dry_run``, ``duration_s``, ``report`` (the
            report file or ``None``), and ``errors`` when the run did not start); JSON-serialisable.
        errors: one line per problem: the configuration errors, the connection's failure, or
            ``MESSAGE_KEY: STATUS: ERROR`` for each message that failed, was partly refused or
            deferred. Never a secret's value (mailgem's messages never hold one).
    """

    exit_code: int
    summary: dict[str, Any]
    errors: list[str]

    @property
    def skipped(self) -> bool:
        """Nothing to send: the frame was empty and the job's ``on_empty`` is ``skip``, or the
        job's ``skip_if`` held for the run (:attr:`skipped_by` says which)."""
        return self.skipped_by is not None

    @property
    def skipped_by(self) -> str | None:
        """``"on_empty"`` or ``"skip_if"`` when the whole run was skipped (see :attr:`skipped`), else ``None``."""
        if self.exit_code != EXIT_OK:
            return None
        if self.summary.get("skipped_by") == "skip_if":
            return "skip_if"
        counts = self.summary.get("counts") or {}
        return "on_empty" if set(counts) == {"skipped"} else None


def run_job_file(job: str | Path, *, fabric: str | Path | None = None, params: Mapping[str, Any] | None = None,
                 user: str | None = None, master: str | None = None, remote: str | None = None,
                 report_out: str | Path | None = None, local: bool = False, outbox: str | Path | None = None,
                 dry_run: bool = False, verbose: bool = False) -> RunOutcome:
    """Run ``job`` as ``mailgem run`` would, in this process.

    Args:
        job: the job YAML file.
        fabric: the fabric YAML (default: ``$MAILGEM_FABRIC``, as the command).
        params: values that replace the job's ``params`` of the same names (kept as given: not
            read as YAML, unlike ``--param``).
        user: who runs the job (default: ``$MAILGEM_USER``, else the OS login).
        master: a local session's Spark master (default: the command's, ``local[2]``).
        remote: a Spark Connect URL (``sc://host:15002``) instead of a local session.
        report_out: write the delivery report here (``.csv``, ``.json``/``.jsonl``, ``.parquet``).
        local: send through the embedded local SMTP server (``--local``).
        outbox: with ``local``: where that server saves what it receives.

    Returns:
        the outcome; never raises for a run that failed (its exit code says how), only for a bug
        in the arguments (``master`` with ``remote``, ``local`` with ``fabric``: SystemExit 2).
    """
    argv = ["run", str(job)]
    for flag, value in (("--fabric", fabric), ("--user", user), ("--master", master), ("--remote", remote),
                        ("--report-out", report_out), ("--outbox", outbox)):
        if value is not None:
            argv += [flag, str(value)]
    argv += [flag for flag, on in (("--local", local), ("--dry-run", dry_run)) if on]
    args = parser().parse_args(["--verbose", *argv] if verbose else argv)
    args.params = dict(params or {})
    code = run_command(args)
    summary: dict[str, Any] = getattr(args, "summary", None) or {"job": str(job), "exit_code": code}
    return RunOutcome(code, summary, _error_lines(summary, getattr(args, "report", None)))


def _error_lines(summary: dict[str, Any], report: Any) -> list[str]:
    errors = [str(e) for e in summary.get("errors") or []]
    if summary.get("report_error"):
        errors.append(str(summary["report_error"]))
    if report is not None:
        failed = report[report["status"].isin(_FAILED)]
        errors += [f"{row.message_key}: {row.status}: {row.error or 'no error text'}" for row in failed.itertuples()]
    return errors
