"""The body table: formatted, HTML-escaped cells with inline CSS, cut to fit a byte budget.

Cells are formatted per value type (float, int, date, datetime; NaN/None/NaT as ``na_rep``),
escaped by Jinja2's autoescape, and styled with css-inline (no ``<style>`` needed by the mail
client; remote stylesheets are never loaded).
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
import math
import re
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import css_inline
import jinja2
import pyarrow as pa
import pyarrow.compute as pc
from markupsafe import Markup

from ..properties import Formats, Summary

__all__ = ["Table", "format_cell", "json_text", "is_nested", "format_rows", "html_table", "text_table", "summarise", "TABLE_CSS", "fit_rows"]

TABLE_CSS = """
table.mailgem { border-collapse: collapse; font-family: Arial, Helvetica, sans-serif; font-size: 13px; }
table.mailgem th { background-color: #f2f4f7; color: #1d2939; text-align: left; padding: 6px 10px; border: 1px solid #d0d5dd; }
table.mailgem td { padding: 4px 10px; border: 1px solid #e4e7ec; color: #101828; overflow-wrap: anywhere; word-break: break-word; }
table.mailgem td.num, table.mailgem th.num { text-align: right; }
p.mailgem-note { font-family: Arial, Helvetica, sans-serif; font-size: 12px; color: #667085; }
"""

_SAMPLE = ('<table class="mailgem"><thead><tr><th>h</th><th class="num">h</th></tr></thead><tbody><tr>'
           '<td>c</td><td class="num">c</td></tr></tbody></table><p class="mailgem-note">n</p>')


@functools.lru_cache(maxsize=1)
def _styles() -> dict[str, str]:
    """Inline styles per element kind, computed once by css-inline from :data:`TABLE_CSS`.

    Inlining a sample once and reusing its ``style`` attributes gives every table the same
    result as inlining it whole, at a fraction of the cost per message.
    """
    inlined = css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False).inline_fragment(_SAMPLE, TABLE_CSS)
    found = re.findall(r'<(table|th|td|p)( class="[^"]*")? style="([^"]*)"', inlined)
    return {f"{tag}{'.num' if 'num' in cls else ''}": style for tag, cls, style in found}


_TABLE = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string(
    """<table role="table" cellspacing="0" cellpadding="0" style="{{ s['table'] }}">
<thead><tr>{% for c in header %}<th style="{{ s['th.num'] if numeric[loop.index0] else s['th'] }}">{{ c }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in rows %}<tr>{% for cell in row %}<td style="{{ cell_styles[loop.index0] }}">{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>
{% if shown < total %}<p style="{{ s['p'] }}">Showing {{ "{:,}".format(shown) }} of {{ "{:,}".format(total) }} rows{% if note %}; {{ note }}{% endif %}.</p>
{% endif %}""")


@dataclass(frozen=True)
class Table:
    """Formatted cells ready to render: ``header``, ``rows`` (strings), ``numeric`` flags per column."""

    header: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    total: int


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


def format_rows(table: pa.Table, limit: int, formats: Formats, total: int | None = None,
                max_cell_chars: int = 200) -> Table:
    """Format the first ``limit`` rows of ``table``, which stands for ``total`` rows (default: its own);
    cells past ``max_cell_chars`` are cut with "…"."""
    head = table.slice(0, limit)
    numeric = [pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) for t in head.schema.types]
    columns = [[_clip(format_cell(v, formats), max_cell_chars) for v in col.to_pylist()] for col in head.columns]
    rows = [list(r) for r in zip(*columns, strict=True)] if columns else []
    return Table(list(head.column_names), rows, numeric, table.num_rows if total is None else total)


def html_table(table: Table, shown: int, note: str = "") -> Markup:
    """The first ``shown`` rows as an HTML table with inline styles, plus the "showing N of M" note."""
    styles = _styles()
    cell_styles = [styles["td.num"] if n else styles["td"] for n in table.numeric]
    return Markup(_TABLE.render(header=table.header, rows=table.rows[:shown], numeric=table.numeric, s=styles,
                                cell_styles=cell_styles, shown=shown, total=table.total, note=note))


_LINE_BREAKS = re.compile(r"\s*[\r\n\u2028\u2029]+\s*")


def text_table(table: Table, shown: int, max_width: int = 40) -> str:
    """The first ``shown`` rows as a fixed-width text table, for the text/plain alternative.
    Line breaks inside a cell become spaces, so every row stays one line."""
    clip = lambda s: _clip(_LINE_BREAKS.sub(" ", s), max_width)  # noqa: E731
    header = [clip(h) for h in table.header]
    rows = [[clip(c) for c in r] for r in table.rows[:shown]]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if table.numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()
    out = [line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]
    if shown < table.total:
        out.append(f"Showing {shown:,} of {table.total:,} rows.")
    return "\n".join(out)


def fit_rows(render: Callable[[int], bytes], max_rows: int, budget: int) -> tuple[int, bytes]:
    """Largest row count ``n <= max_rows`` whose rendering fits ``budget`` bytes (binary search).

    Returns ``(n, rendering)``; ``n`` may be 0 when even an empty table is over budget.
    """
    best = render(max_rows)
    if len(best) <= budget:
        return max_rows, best
    low, high = 0, max_rows - 1
    best_n, best = 0, render(0)
    while low <= high:
        mid = (low + high) // 2
        out = render(mid)
        if len(out) <= budget:
            best_n, best, low = mid, out, mid + 1
        else:
            high = mid - 1
    return best_n, best


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
