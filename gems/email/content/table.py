"""The body table's cells: each column formatted by its kind and presentation (label, number
or date format, unit), time-zone-aware timestamps in their zone (named once in the header),
a totals row and highlighted cells; rendered by :mod:`.table_html`.

Cells are formatted per value type (float, int, date, datetime; NaN/None/NaT as ``na_rep``)
or by the column's ``format`` (:class:`~mailgem.gems.email.properties.Column`).
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
import math
import operator
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..properties import Column, Formats, Highlight, Summary, TotalFunction

__all__ = ["Table", "format_cell", "json_text", "is_nested", "format_rows", "summarise", "fit_rows", "column_kind",
           "zone_label", "in_zone"]


@dataclass(frozen=True)
class Table:
    """Formatted cells ready to render.

    Attributes:
        header: one heading per column (its label or name, with the zone of a zoned timestamp
            column: ``Scheduled (UTC)``).
        rows: the formatted cells of the first rows, as text.
        kinds: per column ``number``, ``time`` (dates, timestamps), ``bool`` or ``text``.
        align: per column ``left``, ``right`` or ``center``.
        total: how many rows the table stands for (the "showing N of M" note).
        marks: per row, per column, the highlight style of the cell (``warn``, ``bad``,
            ``good``) or ``None``; empty when no highlight is configured.
        totals: the totals row's cells (``""`` for columns without a total), or ``None``.
        legend: what each highlight style means, e.g. ``▲ warning: Avg delay > 30``.
    """

    header: list[str]
    rows: list[list[str]]
    kinds: list[str]
    align: list[str]
    total: int
    marks: list[list[str | None]] = field(default_factory=list)
    totals: list[str] | None = None
    legend: list[str] = field(default_factory=list)
    # The body rows as HTML, made as the renderer needs them (see table_html.html_table).
    html_rows: list[str] = field(default_factory=list, compare=False, repr=False)

    @property
    def numeric(self) -> list[bool]:
        """Per column: a number column."""
        return [k == "number" for k in self.kinds]


# Past this magnitude a fixed-point format is unreadable (1.797e308 would be 414 characters).
_HUGE = 1e15


def _number(value: float | decimal.Decimal, spec: str) -> str:
    """A float in the configured format; infinities as ∞, huge values in scientific notation,
    and no negative zero (``-0.00``) from rounding."""
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if abs(float(value)) >= _HUGE:
        return format(float(value), ".4g")
    text = format(value, spec)
    if text.startswith("-") and not any(ch in "123456789" for ch in text):
        text = text[1:]
    return text


def json_text(value: Any) -> str:
    """Nested values (lists, structs, maps) as compact JSON."""
    if isinstance(value, list) and value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        value = {str(k): v for k, v in value}  # an Arrow map comes as (key, value) pairs
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def is_nested(data_type: pa.DataType) -> bool:
    """Lists, structs and maps: shown and written as compact JSON."""
    return pa.types.is_nested(data_type)


def format_cell(value: Any, formats: Formats) -> str:
    """Format one value for display: numbers with the format specs, dates with ``strftime``,
    nested values as compact JSON."""
    if value is None:
        return formats.na_rep
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return formats.na_rep if math.isnan(value) else _number(value, formats.float_format)
    if isinstance(value, int):
        return format(value, formats.int_format)
    if isinstance(value, decimal.Decimal):
        return _number(value, formats.float_format)
    if isinstance(value, dt.datetime):
        return _datetime(value, formats)
    if isinstance(value, dt.date):
        return value.strftime(formats.date_format)
    if isinstance(value, list | dict | tuple):
        return json_text(value)
    return str(value)


@functools.lru_cache(maxsize=16)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def _datetime(value: dt.datetime, formats: Formats) -> str:
    """A timestamp in ``datetime_format``; microseconds only when there are some (and the
    format ends in seconds); an aware one in ``formats.timezone`` (else its own zone) with its
    ISO 8601 offset, so the instant is never lost."""
    if value.tzinfo is not None and formats.timezone:
        value = value.astimezone(_zone(formats.timezone))
    fmt = formats.datetime_format
    text = value.strftime(fmt)
    if value.microsecond and fmt.endswith("%S"):
        text += f".{value.microsecond:06d}"
    if value.tzinfo is not None:
        offset = value.strftime("%z")  # +0100
        text += f"{offset[:3]}:{offset[3:]}"
    return text


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def column_kind(data_type: pa.DataType) -> str:
    """``number``, ``time`` (date, timestamp, time), ``bool`` or ``text`` (everything else,
    nested values included): how a column is aligned and whether its cells may wrap."""
    if pa.types.is_integer(data_type) or pa.types.is_floating(data_type) or pa.types.is_decimal(data_type):
        return "number"
    if pa.types.is_temporal(data_type):
        return "time"
    if pa.types.is_boolean(data_type):
        return "bool"
    return "text"


def zone_label(data_type: pa.DataType) -> str | None:
    """The zone a time-zone-aware timestamp column is shown in (``UTC``, ``Europe/Berlin``,
    ``+01:00``), else ``None``."""
    return data_type.tz if pa.types.is_timestamp(data_type) and data_type.tz else None


def in_zone(table: pa.Table, zone: str | None) -> pa.Table:
    """Time-zone-aware timestamp columns shown in ``zone`` (the instant is unchanged)."""
    if zone is None or not any(pa.types.is_timestamp(t) and t.tz for t in table.schema.types):
        return table
    columns = [c.cast(pa.timestamp(c.type.unit, tz=zone)) if pa.types.is_timestamp(c.type) and c.type.tz else c
               for c in table.columns]
    return pa.table(columns, names=table.column_names)


def _with_unit(text: str, unit: str | None) -> str:
    if not unit:
        return text
    return f"{text}{unit}" if unit in ("%", "‰") else f"{text} {unit}"


def column_formatter(data_type: pa.DataType, column: Column | None, formats: Formats) -> Callable[[Any], str]:
    """A function formatting one value of a column of ``data_type`` for display, by the
    column's presentation (``format``, ``unit``) and else ``formats``. A zoned timestamp is
    written as wall time in its zone without an offset (the header names the zone, see
    :func:`zone_label`).

    Raises:
        ValueError: a date pattern on a number column or a number format on a date column
            (names the column and both).
    """
    spec = column.format if column is not None else None
    kind = column.format_kind if column is not None else None
    unit = column.unit if column is not None else None
    data_kind = column_kind(data_type)
    if kind is not None and data_kind in ("number", "time") and (kind == "date") != (data_kind == "time"):
        what = "a date pattern" if kind == "date" else "a number format"
        raise ValueError(f"table.columns: format {spec!r} of column {column.name!r} is {what}, but the column holds "  # type: ignore[union-attr]
                         f"{'dates or times' if data_kind == 'time' else 'numbers'} ({data_type})")
    na = formats.na_rep
    if data_kind == "number" and (spec is not None or unit is not None):
        number_spec = spec or (formats.int_format if pa.types.is_integer(data_type) else formats.float_format)

        # A spec without a precision (",") shows a whole float (an integer column with a null, from
        # pandas) as the integer it is: 1,200, not 1,200.0.
        whole = not any(ch in number_spec for ch in ".eEfFgG%")

        def number(value: Any) -> str:
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return na
            if whole and isinstance(value, float) and value.is_integer() and abs(value) < _HUGE:
                value = int(value)
            return _with_unit(_number(value, number_spec) if not isinstance(value, int) else format(value, number_spec), unit)
        return number
    if data_kind == "time" and (spec is not None or zone_label(data_type)):
        def when(value: Any) -> str:
            if value is None:
                return na
            if not isinstance(value, dt.date):
                return str(value)
            if isinstance(value, dt.datetime) and value.tzinfo is not None:
                value = value.astimezone(_zone(data_type.tz)) if data_type.tz and data_type.tz[0] not in "+-" else value
            fmt = spec or (formats.datetime_format if isinstance(value, dt.datetime) else formats.date_format)
            text = value.strftime(fmt)
            if spec is None and isinstance(value, dt.datetime) and value.microsecond and fmt.endswith("%S"):
                text += f".{value.microsecond:06d}"
            return text
        return when
    return lambda value: format_cell(value, formats)


_COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne}


def _matches(value: Any, op: str, operand: float | str) -> bool:
    """Whether a raw cell value satisfies a highlight's comparison (never for a null)."""
    if value is None:
        return False
    if isinstance(operand, str):
        return _COMPARE[op](str(value), operand)
    if isinstance(value, bool) or not isinstance(value, int | float | decimal.Decimal):
        return False
    number = float(value)
    return not math.isnan(number) and _COMPARE[op](number, operand)


def _marks(head: pa.Table, rules: Sequence[Highlight]) -> list[list[str | None]]:
    """Per shown row, per column, the style of the first highlight rule the value satisfies."""
    if not rules:
        return []
    names = head.column_names
    marks: list[list[str | None]] = [[None] * len(names) for _ in range(head.num_rows)]
    for rule in rules:
        if rule.column not in names:
            raise ValueError(f"table.highlight: no column {rule.column!r} in the table; it has: {', '.join(names)}")
        c = names.index(rule.column)
        op, operand = Highlight.parse(rule.when)
        for r, value in enumerate(head.column(c).to_pylist()):
            if marks[r][c] is None and _matches(value, op, operand):
                marks[r][c] = rule.style
    return marks


_TOTAL_WORDS = {"sum": "Total", "mean": "Average", "count": "Count"}


def _totals(table: pa.Table, totals: Mapping[str, TotalFunction], formatters: list[Callable[[Any], str]],
            formats: Formats) -> list[str] | None:
    """The totals row over every row of ``table``: ``sum`` and ``mean`` of number columns,
    ``count`` of non-null values; the first cell names the function when that column has no total.

    Raises:
        ValueError: a column that is not in the table, or a sum or mean of a column that is not numbers.
    """
    if not totals:
        return None
    names = table.column_names
    cells = [""] * len(names)
    functions = set(totals.values())
    for name, function in totals.items():
        if name not in names:
            raise ValueError(f"table.totals: no column {name!r} in the table; it has: {', '.join(names)}")
        i = names.index(name)
        column = table.column(i)
        if function == "count":
            text = format(pc.count(column).as_py(), formats.int_format)
        elif column_kind(column.type) != "number":
            raise ValueError(f"table.totals: {function} of column {name!r} needs numbers; it holds {column.type}: "
                             "use count")
        else:
            value = (pc.sum(column) if function == "sum" else pc.mean(column)).as_py()
            text = formatters[i](value)
        cells[i] = text if len(functions) == 1 else f"{_TOTAL_WORDS[function].lower()} {text}"
    if not cells[0]:
        cells[0] = _TOTAL_WORDS[functions.pop()] if len(functions) == 1 else "Totals"
    return cells


def format_rows(table: pa.Table, limit: int, formats: Formats, total: int | None = None,
                max_cell_chars: int = 200, columns: Mapping[str, Column] | None = None,
                totals: Mapping[str, TotalFunction] | None = None,
                highlight: Sequence[Highlight] = ()) -> Table:
    """Format the first ``limit`` rows of ``table``, which stands for ``total`` rows (default: its own).

    ``columns`` gives the presentation by column name (label, format, unit, align); cells past
    ``max_cell_chars`` are cut with "…"; ``totals`` are computed over every row of ``table``;
    ``highlight`` marks cells of the shown rows. Time-zone-aware timestamps are shown in
    ``formats.timezone`` when set (else their own zone), named in the header.

    Raises:
        ValueError: a format that does not fit its column, or a totals or highlight column
            that is not in the table (the message names the option and the column).
    """
    columns = columns or {}
    table = in_zone(table, formats.timezone)
    head = table.slice(0, limit)
    presentation = [columns.get(name) for name in head.column_names]
    formatters = [column_formatter(t, c, formats) for t, c in zip(head.schema.types, presentation, strict=True)]
    kinds = [column_kind(t) for t in head.schema.types]
    header = []
    for name, data_type, c in zip(head.column_names, head.schema.types, presentation, strict=True):
        heading = c.heading if c is not None else name
        zone = zone_label(data_type)
        header.append(f"{heading} ({zone})" if zone and (c is None or not c.format or "%z" not in c.format) else heading)
    align: list[str] = [c.align if c is not None and c.align else ("right" if k == "number" else "left")
                        for c, k in zip(presentation, kinds, strict=True)]
    cells = [[_clip(f(v), max_cell_chars) for v in col.to_pylist()] for f, col in zip(formatters, head.columns, strict=True)]
    rows = [list(r) for r in zip(*cells, strict=True)] if cells else []
    legend = [f"{rule.label}: {columns[rule.column].heading if rule.column in columns else rule.column} {rule.when.strip()}"
              for rule in highlight]
    return Table(header, rows, kinds, align, table.num_rows if total is None else total, _marks(head, highlight),
                 _totals(table, totals or {}, formatters, formats), list(dict.fromkeys(legend)))


_PROBE_ROWS = 32


def fit_rows(render: Callable[[int], bytes], max_rows: int, budget: int) -> tuple[int, bytes]:
    """Largest row count ``n <= max_rows`` whose rendering fits ``budget`` bytes.

    The size grows about linearly with ``n``. The first try is ``max_rows`` when that is a
    few rows (one render for the common small table), else a probe of 32 rows that gives the
    bytes a row takes; each next guess interpolates between the largest count known to fit
    and the smallest known not to, and bisection takes over when interpolation stalls — a
    few renders, the whole ``max_rows`` only when it may fit.

    Returns ``(n, rendering)``; ``n`` may be 0 when even an empty table is over budget.
    """
    tried: dict[int, bytes] = {}

    def size(n: int) -> int:
        if n not in tried:
            tried[n] = render(n)
        return len(tried[n])

    fits, over = 0, max_rows + 1  # max_rows + 1: nothing known not to fit yet
    guess = min(max_rows, _PROBE_ROWS)
    for step in range(64):  # bounded: ends in ~2·log2(max_rows) renders at most
        if size(guess) <= budget:
            fits = guess
        else:
            over = guess
        if fits == max_rows or over - fits <= 1:
            break
        if over > max_rows:  # every try fitted: extrapolate from the bytes a row takes
            per_row = max(1.0, (size(fits) - size(0)) / fits)
            guess = fits + max(1, int((budget - size(fits)) / per_row))
        elif step % 2 == 0 and size(over) > size(fits):
            guess = fits + (budget - size(fits)) * (over - fits) // (size(over) - size(fits))
        else:
            guess = (fits + over) // 2
        guess = min(max(guess, fits + 1), over - 1, max_rows)
    size(fits)
    return fits, tried[fits]


def _whole_floats(column: pa.ChunkedArray) -> bool:
    """A float column whose every value is a whole number within int64's exact range."""
    if not pa.types.is_floating(column.type):
        return False
    values = pc.drop_null(column)
    if len(values) == 0:
        return False
    within = pc.all(pc.less_equal(pc.abs(values), 2.0**53)).as_py()
    return bool(within and pc.all(pc.equal(values, pc.floor(values))).as_py())


_ARROW_AGG = {"count": "count", "sum": "sum", "mean": "mean", "min": "min", "max": "max", "count_distinct": "count_distinct"}


def summarise(table: pa.Table, summary: Summary) -> pa.Table:
    """Group ``table`` and aggregate, with output columns named as configured, sorted by ``order_by``."""
    aggs = [(a.column, _ARROW_AGG[a.function]) for a in summary.aggregates]
    grouped = table.group_by(summary.group_by).aggregate(aggs)
    names = {f"{a.column}_{_ARROW_AGG[a.function]}": a.output_name for a in summary.aggregates}
    grouped = grouped.rename_columns([names.get(n, n) for n in grouped.column_names])
    # A sum, min or max of whole numbers stored as floats (pandas turns an integer column with a
    # null into floats) is a whole number: shown as 290, not 290.0.
    for a in summary.aggregates:
        if a.function in ("sum", "min", "max") and _whole_floats(table.column(a.column)):
            index = grouped.column_names.index(a.output_name)
            grouped = grouped.set_column(index, a.output_name, grouped.column(index).cast(pa.int64()))
    ordered = summary.group_by + [a.output_name for a in summary.aggregates]
    grouped = grouped.select(ordered)
    if summary.order_by:
        keys = [(k.lstrip("-"), "descending" if k.startswith("-") else "ascending") for k in summary.order_by]
        grouped = grouped.take(pc.sort_indices(grouped, sort_keys=keys))  # nulls last
    return grouped
