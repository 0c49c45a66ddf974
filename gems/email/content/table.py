"""The body table's cells: each column formatted by its kind and presentation (label, number
or date format, unit), time-zone-aware timestamps in their zone (named once in the header),
a totals row and highlighted cells; rendered by :mod:`.table_html`.

Cells are formatted per value type (float, int, date, datetime; NaN/None/NaT as ``na_rep``)
or by the column's ``format`` (:class:`~mailgem.gems.email.properties.Column`).
"""

from __future__ import annotations

import decimal
import functools
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..properties import Column, Formats, Highlight, Summary, TotalFunction
from .cells import clip, column_formatter, column_kind, in_zone, zone_label

__all__ = ["Table", "format_rows", "summarise", "fit_rows"]


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


@functools.lru_cache(maxsize=64)
def _shape(schema: pa.Schema, columns: tuple[tuple[str, Column], ...], formats: Formats
           ) -> tuple[list[Callable[[Any], str]], tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """What a table of ``schema`` needs besides its values, made once per shape (a per_row run
    formats one row per message, every one of the same shape): each column's formatter
    (:func:`column_formatter`), kind, heading (its label, with the zone of a zoned timestamp:
    ``at (Europe/Berlin)``) and alignment.

    Raises:
        ValueError: a column's format does not fit its type.
    """
    by_name = dict(columns)
    presentation = [by_name.get(name) for name in schema.names]
    formatters = [column_formatter(f.type, c, formats) for f, c in zip(schema, presentation, strict=True)]
    kinds = tuple(column_kind(f.type) for f in schema)
    header = []
    for f, c in zip(schema, presentation, strict=True):
        heading = c.heading if c is not None else f.name
        zone = zone_label(f.type)
        header.append(f"{heading} ({zone})" if zone and (c is None or not c.format or "%z" not in c.format) else heading)
    align = tuple(c.align if c is not None and c.align else ("right" if k == "number" else "left")
                  for c, k in zip(presentation, kinds, strict=True))
    return formatters, kinds, tuple(header), align


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
        else:  # the sum of no values is 0; their mean is none (na_rep)
            value = (pc.sum(column, min_count=0) if function == "sum" else pc.mean(column)).as_py()
            text = formatters[i](value)
        cells[i] = text if len(functions) == 1 else f"{_TOTAL_WORDS[function].lower()} {text}"
    # The row says what it is in its first cell, beside that column's own total if it has one.
    word = _TOTAL_WORDS[next(iter(functions))] if len(functions) == 1 else "Totals"
    if names[0] not in totals:
        cells[0] = word
    elif len(functions) == 1:
        cells[0] = f"{word}: {cells[0]}"
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
    table = in_zone(table, formats.timezone)
    head = table.slice(0, limit)
    formatters, kinds, header, align = _shape(head.schema, tuple((columns or {}).items()), formats)
    cells = [[clip(f(v), max_cell_chars) for v in col.to_pylist()] for f, col in zip(formatters, head.columns, strict=True)]
    rows = [list(r) for r in zip(*cells, strict=True)] if cells else []
    columns = columns or {}
    legend = [f"{rule.label}: {columns[rule.column].heading if rule.column in columns else rule.column} {rule.when.strip()}"
              for rule in highlight]
    return Table(list(header), rows, list(kinds), list(align), table.num_rows if total is None else total, _marks(head, highlight),
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
