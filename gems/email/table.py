"""The body table: formatted, HTML-escaped cells with inline CSS, cut to fit a byte budget.

Cells are formatted per value type (float, int, date, datetime; NaN/None/NaT as ``na_rep``),
escaped by Jinja2's autoescape, and styled with css-inline (no ``<style>`` needed by the mail
client; remote stylesheets are never loaded).
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import css_inline
import jinja2
import pyarrow as pa
import pyarrow.compute as pc
from markupsafe import Markup

from .properties import Formats, Summary

__all__ = ["Table", "format_cell", "format_rows", "html_table", "text_table", "summarise", "TABLE_CSS", "fit_rows"]

TABLE_CSS = """
table.mailgem { border-collapse: collapse; font-family: Arial, Helvetica, sans-serif; font-size: 13px; }
table.mailgem th { background-color: #f2f4f7; color: #1d2939; text-align: left; padding: 6px 10px; border: 1px solid #d0d5dd; }
table.mailgem td { padding: 4px 10px; border: 1px solid #e4e7ec; color: #101828; }
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


def format_cell(value: Any, formats: Formats) -> str:
    """Format one value for display: numbers with the format specs, dates with ``strftime``."""
    if value is None:
        return formats.na_rep
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return formats.na_rep if math.isnan(value) else format(value, formats.float_format)
    if isinstance(value, int):
        return format(value, formats.int_format)
    if isinstance(value, decimal.Decimal):
        return format(value, formats.float_format)
    if isinstance(value, dt.datetime):
        return value.strftime(formats.datetime_format)
    if isinstance(value, dt.date):
        return value.strftime(formats.date_format)
    return str(value)


def format_rows(table: pa.Table, limit: int, formats: Formats, total: int | None = None) -> Table:
    """Format the first ``limit`` rows of ``table``, which stands for ``total`` rows (default: its own)."""
    head = table.slice(0, limit)
    numeric = [pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) for t in head.schema.types]
    columns = [[format_cell(v, formats) for v in col.to_pylist()] for col in head.columns]
    rows = [list(r) for r in zip(*columns, strict=True)] if columns else []
    return Table(list(head.column_names), rows, numeric, table.num_rows if total is None else total)


def html_table(table: Table, shown: int, note: str = "") -> Markup:
    """The first ``shown`` rows as an HTML table with inline styles, plus the "showing N of M" note."""
    styles = _styles()
    cell_styles = [styles["td.num"] if n else styles["td"] for n in table.numeric]
    return Markup(_TABLE.render(header=table.header, rows=table.rows[:shown], numeric=table.numeric, s=styles,
                                cell_styles=cell_styles, shown=shown, total=table.total, note=note))


def text_table(table: Table, shown: int, max_width: int = 40) -> str:
    """The first ``shown`` rows as a fixed-width text table, for the text/plain alternative."""
    clip = lambda s: s if len(s) <= max_width else s[: max_width - 1] + "…"  # noqa: E731
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


_ARROW_AGG = {"count": "count", "sum": "sum", "mean": "mean", "min": "min", "max": "max", "count_distinct": "count_distinct"}


def summarise(table: pa.Table, summary: Summary) -> pa.Table:
    """Group ``table`` and aggregate, with output columns named as configured, sorted by ``order_by``."""
    aggs = [(a.column, _ARROW_AGG[a.function]) for a in summary.aggregates]
    grouped = table.group_by(summary.group_by).aggregate(aggs)
    names = {f"{a.column}_{_ARROW_AGG[a.function]}": a.output_name for a in summary.aggregates}
    grouped = grouped.rename_columns([names.get(n, n) for n in grouped.column_names])
    ordered = summary.group_by + [a.output_name for a in summary.aggregates]
    grouped = grouped.select(ordered)
    if summary.order_by:
        keys = [(k.lstrip("-"), "descending" if k.startswith("-") else "ascending") for k in summary.order_by]
        grouped = grouped.take(pc.sort_indices(grouped, sort_keys=keys))  # nulls last
    return grouped
