"""What a delivery report means to a Dagster run: its materialization metadata, and whether (and
why) the run fails. Plain values only, so this module needs no Dagster (Dagster turns ``int``,
``float`` and ``str`` metadata into its own metadata values).

The report is the Email gem's (:mod:`mailgem.gems.email.run.report`): one row per message, with
``message_key``, ``status``, ``recipients``, ``reply_code``, ``enhanced_status``, ``error`` among
its columns. Its error texts are the gem's, which never hold a secret (connections/errors.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd

from mailgem.gems.email.run.status import DeliveryStatus as S

__all__ = ["FAILING", "DURATION_ATTR", "report_metadata", "failure_description", "failed_rows"]

# Statuses that fail the run: a message the destination did not take whole. The same line as the
# command's exit code 0 (runner/cli/output.py: sent, already_sent, skipped and dry_run are fine).
FAILING = frozenset({S.FAILED, S.PARTIAL, S.DEFERRED, S.NOT_STARTED})

# ``report.attrs[DURATION_ATTR]``: the seconds MailgemResource.send took (float), set by it.
DURATION_ATTR = "duration_s"

# Counts a materialization always has (so Dagster's plots of them have a point for every run);
# other statuses appear when they occur.
_ALWAYS = (S.SENT, S.FAILED)

# Failed messages listed in a failure's description; the rest are counted.
_LISTED = 20


def report_metadata(report: pd.DataFrame) -> dict[str, int | float | str]:
    """The report as Dagster metadata for the asset's materialization (or a failure).

    Returns:
        ``messages`` (int: rows of the report), ``sent`` and ``failed`` (int, always), the count
        of every other status that occurs (``partial``, ``deferred``, ``not_started``,
        ``already_sent``, ``skipped``, ``dry_run``), ``duration_s`` (float, seconds; when the
        report came from :meth:`MailgemResource.send <mailgem.dagster.MailgemResource.send>`),
        ``connection`` (str, when the report names one) and ``errors`` (str: each distinct
        error of a failing message once, with how many messages had it; only when there are).
    """
    counts = Counter(str(status) for status in report["status"])
    metadata: dict[str, int | float | str] = {"messages": len(report)}
    metadata.update({str(status): counts.get(str(status), 0) for status in _ALWAYS})
    metadata.update({status: n for status, n in sorted(counts.items()) if status not in metadata})
    duration = report.attrs.get(DURATION_ATTR)
    if isinstance(duration, int | float):
        metadata[DURATION_ATTR] = round(float(duration), 3)
    connections = sorted({c for c in report.get("connection", []) if c})
    if connections:
        metadata["connection"] = ", ".join(connections)
    errors = Counter(str(e) for e in failed_rows(report)["error"] if isinstance(e, str) and e)
    if errors:
        metadata["errors"] = "\n".join(f"{n} message(s): {error}" for error, n in errors.most_common())
    return metadata


def failed_rows(report: pd.DataFrame) -> pd.DataFrame:
    """The rows of messages that fail the run (status in :data:`FAILING`)."""
    return report[report["status"].isin([str(s) for s in FAILING])]


def failure_description(report: pd.DataFrame) -> str | None:
    """Why the run fails, for a person reading Dagster's run page; ``None`` if nothing failed.

    One line with the counts, then one line per failing message (the first 20): its key, status,
    reply code and enhanced status, recipients and error. An error several messages share is
    written once, below them (``error #1 (3 messages): ...``), as ``mailgem run`` prints it.
    """
    failed = failed_rows(report)
    if failed.empty:
        return None
    counts = Counter(str(s) for s in failed["status"])
    lines = [f"{len(failed)} of {len(report)} message(s) not delivered ("
             + ", ".join(f"{n} {status}" for status, n in counts.most_common()) + "):"]
    errors = Counter(str(e) for e in failed["error"] if _present(e))
    shared = {error: n for n, error in enumerate((e for e, count in errors.items() if count > 1), 1)}
    for row in failed.head(_LISTED).to_dict("records"):
        code = f" {int(row['reply_code'])}" if _present(row["reply_code"]) else ""
        enhanced = f" {row['enhanced_status']}" if _present(row["enhanced_status"]) else ""
        error = str(row["error"]) if _present(row["error"]) else ""
        why = (f" - error #{shared[error]}" if error in shared else f": {error}") if error else ""
        lines.append(f"  {row['message_key']}: {row['status']}{code}{enhanced} to {row['recipients'] or '(nobody)'}{why}")
    if len(failed) > _LISTED:
        lines.append(f"  ... and {len(failed) - _LISTED} more (the delivery report has them all)")
    lines += [f"error #{n} ({errors[error]} messages): {error}" for error, n in shared.items()]
    return "\n".join(lines)


def _present(value: Any) -> bool:
    # An empty report cell may be None, NaN or pandas.NA (nullable int columns), or "".
    return not pd.isna(value) and value != ""
