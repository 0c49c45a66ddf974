"""``skip_if``: a run-level condition, evaluated once after the frame is read and before any
message is built or sent. When it holds nothing is sent, and the delivery report has one row,
message key :data:`RUN_KEY` (``(run)``), status ``skipped_by_rule``, the condition in ``error``.

Its context is the whole frame's: ``row_count``, ``columns``, ``rows`` (the first
``table.max_rows`` rows), ``aggregates`` (every row; see :mod:`..content.aggregates`), ``job``,
``params``, ``run_ts`` and ``run_date``. A frame already collected on the driver gives them from
its Arrow rows; a Spark frame sent from the executors gives them from Spark (one aggregation
when ``row_count`` or ``aggregates`` is used, and the first rows when ``rows`` is), never by
collecting the frame.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from ..content.aggregates import Aggregates, spark_frame_stats
from ..content.conditions import aggregate_columns, condition, variables
from ..content.render import base_context
from ..data import FrameData, collect, column_names, is_spark_frame
from ..properties import EmailProperties
from .report import DeliveryRow
from .status import DeliveryStatus

__all__ = ["RUN_KEY", "skip_if_reason", "skipped_run_row", "run_context"]

log = logging.getLogger("mailgem.gems")

# The message key of the report's one row for a run skip_if skipped: no message of the run has it.
RUN_KEY = "(run)"


def run_context(props: EmailProperties, base: dict[str, Any], *, data: FrameData | None = None,
                frame: Any = None) -> dict[str, Any]:
    """``skip_if``'s context (see the module docstring) from ``data`` (every row, collected) or
    from ``frame`` (a Spark or pandas frame, read only as far as the condition needs)."""
    source = props.skip_if or ""
    names = variables(source)
    max_rows = props.table.max_rows
    ctx = dict(base)
    if data is None and frame is not None and not is_spark_frame(frame):
        data = collect(frame, all_rows=True, head_rows=max_rows, timezone=props.formats.timezone)
    if data is not None:
        ctx.update(row_count=data.row_count, columns=data.columns, aggregates=Aggregates(data.table),
                   rows=data.table.slice(0, max_rows).to_pylist())
        return ctx
    ctx["columns"] = column_names(frame)
    if names & {"row_count", "aggregates"}:
        wanted = aggregate_columns(source) if "aggregates" in names else set()
        ctx["row_count"], ctx["aggregates"] = spark_frame_stats(frame, wanted, timezone=props.formats.timezone)
    if "rows" in names:
        head = collect(frame.limit(max_rows), all_rows=True, head_rows=max_rows, timezone=props.formats.timezone)
        ctx["rows"] = head.table.to_pylist()
    return ctx


def skip_if_reason(props: EmailProperties, job: str, params: dict[str, Any], run_ts: dt.datetime, *,
                   data: FrameData | None = None, frame: Any = None) -> str | None:
    """Why the run sends nothing (``skip_if: <condition> was true``), or ``None`` (no
    ``skip_if``, or it does not hold).

    Raises:
        TemplateError: the condition failed (an undefined name, a type error): the run stops
            before anything is sent.
    """
    source = props.skip_if
    if source is None:
        return None
    ctx = run_context(props, base_context(job, run_ts, params), data=data, frame=frame)
    if not condition("skip_if", source).holds(ctx):
        return None
    log.info("gem %s: skip_if holds, nothing is sent: %s", job, source.strip())
    return f"skip_if: {source.strip()} was true; nothing was sent"


def skipped_run_row(reason: str, connection: str) -> DeliveryRow:
    """The report's one row for a run ``skip_if`` skipped."""
    return DeliveryRow(RUN_KEY, DeliveryStatus.SKIPPED_BY_RULE, error=reason, connection=connection)
