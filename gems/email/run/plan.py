"""Which emails a frame makes: the whole frame (report), one per group, or one per row."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa

from ..content.compose import Unit
from ..content.conditions import uses_aggregates
from ..data import key_form
from ..properties import EmailProperties
from .in1 import In1Rows

__all__ = ["units", "count_units", "row_key", "group_key", "needs_all_rows"]


def _json(values: Any) -> str:
    return json.dumps(values, default=str, ensure_ascii=False, separators=(",", ":"))


def group_key(values: dict[str, Any]) -> str:
    """Message key of a group: ``group:`` and its values as JSON (stable across runs)."""
    return "group:" + _json(list(values.values()))


def row_key(row: dict[str, Any], key_columns: list[str]) -> str:
    """Message key of a row: its key columns' values, or a hash of every value."""
    if key_columns:
        return "row:" + _json([row[c] for c in key_columns])
    return "row:" + hashlib.sha256(_json(row).encode()).hexdigest()[:24]


def units(table: pa.Table, props: EmailProperties, row_count: int | None = None,
          invalid_rows: dict[int, str] | None = None,
          key_zones: Mapping[str, tuple[str, bool]] | None = None, in1: In1Rows | None = None) -> Iterator[Unit]:
    """The emails of ``table`` in the gem's mode, in a stable order.

    ``row_count`` is the whole frame's count when ``table`` holds only its first rows (report
    mode without attachments). ``invalid_rows`` (row position: why) marks the emails made from
    those rows as failing with that reason (see :attr:`FrameData.invalid_rows`). ``key_zones``
    (:attr:`FrameData.key_zones`): how message keys read the timestamp columns, which templates
    (``row``, ``group``) get as ``table`` shows them. ``in1``: the second input, whose rows for
    each email become its :attr:`Unit.in1` (see :mod:`.in1`).
    """
    invalid = invalid_rows or {}
    keyed = props.group_by if props.mode == "per_group" else props.key_columns or table.column_names
    zones = {c: z for c, z in (key_zones or {}).items() if c in keyed}
    key_table = key_form(table.select(keyed), zones) if zones else None

    def problem(positions: Any) -> str | None:
        return next((invalid[p] for p in positions if p in invalid), None) if invalid else None

    def rows_of(sub: pa.Table) -> pa.Table | None:
        return None if in1 is None else in1.for_rows(sub)

    if props.mode == "report":
        yield Unit("report", table, table.num_rows if row_count is None else row_count,
                   problem=problem(sorted(invalid)), in1=rows_of(table))
    elif props.mode == "per_group":
        keys = table.select(props.group_by).to_pandas()
        groups = keys.groupby(props.group_by, sort=True, dropna=False).indices
        for index in groups.values():
            sub = table.take(pa.array(index))
            group = sub.select(props.group_by).slice(0, 1).to_pylist()[0]  # Arrow values: null is None
            key = group if key_table is None else key_table.take(pa.array(index[:1])).to_pylist()[0]
            yield Unit(group_key(key), sub, sub.num_rows, {"group": group}, problem(index.tolist()), rows_of(sub))
    else:
        offset = 0
        for batch in table.to_batches(max_chunksize=1024):  # to Python a batch at a time, not a row
            rows = batch.to_pylist()
            key_rows = rows if key_table is None else key_table.slice(offset, len(rows)).to_pylist()
            for row, key_row in zip(rows, key_rows, strict=True):
                one = table.slice(offset, 1)
                yield Unit(row_key(key_row, props.key_columns), one, 1, {"row": row}, invalid.get(offset), rows_of(one))
                offset += 1


def count_units(table: pa.Table, props: EmailProperties) -> int:
    """How many emails :func:`units` makes, without building them."""
    if props.mode == "report":
        return 1
    if props.mode == "per_group":
        return table.select(props.group_by).to_pandas().drop_duplicates().shape[0]
    return table.num_rows


def needs_all_rows(props: EmailProperties) -> bool:
    """Whether the driver must collect every row of the frame (not only the first
    ``table.max_rows``): for more than one message, attachments,
    a summary or totals, sections (each its own table and summary over all the rows), recipients
    from columns, ``slice_by`` (every row's keys select its in1 rows), and conditions or ``aggregates`` (they see the whole frame in ``report`` mode)."""
    return bool(props.mode != "report" or props.attachments or props.table.summary or props.table.totals or props.sections
                or props.to_column or props.cc_column or props.bcc_column or props.send_if or props.skip_if or props.slice_by
                or uses_aggregates(props))
