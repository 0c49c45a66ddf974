"""The inline chart: a PNG drawn with matplotlib's Agg backend (no display), sized for a phone.

The image is 1,200 px wide and shown at 600 px (2x density: sharp on high-resolution screens,
within the 600 px mail clients lay out). It travels in the message as a ``multipart/related``
part with a ``Content-ID`` the HTML references as ``cid:`` (RFC 2392) — no remote image, so
Gmail and Outlook show it without "display images". The text part and the ``alt`` attribute
carry the same numbers in words (bounded: :data:`MAX_DESCRIPTION_CHARS`).

What cannot be drawn is left out and said: null, non-finite and overflowing y values (a
caption on the chart and in its description), an empty frame (no image at all), and a chart
that fails (the message goes without it, with a note; :func:`chart_part`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import math
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from markupsafe import Markup

from ..properties import ChartOptions, Formats
from .attachments import Attachment
from .chart_axes import (BORDER, DPI, FIGURE_SIZE_IN, MUTED, XAxis, chart_style, cut, font_families,
                         has_wide_chars, setup_x_axis)
from .cells import column_kind, format_cell
from .logged import warn_once

__all__ = ["Chart", "draw_chart", "chart_figure", "chart_part", "DISPLAY_WIDTH_PX", "PIXEL_RATIO", "MAX_DESCRIPTION_CHARS",
           "MAX_DRAWABLE"]

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DISPLAY_WIDTH_PX = 600
PIXEL_RATIO = 2
_DESCRIBED_POINTS = 12  # the text description names at most this many points
MAX_DESCRIPTION_CHARS = 500  # the description (alt text, text part) is cut to this
_TITLE_CHARS = 80
# The largest magnitude drawn. Beyond it the axis's own arithmetic (the span max - min, the 5%
# margins, the transforms' scaling) overflows to inf: 1.7976931348623157e308 is finite, but
# an axis up to it cannot be drawn. No measure a report charts comes near 1e300.
MAX_DRAWABLE = 1e300


@dataclass(frozen=True)
class Chart:
    """A drawn chart.

    ``png``: the image (``width_px`` x ``height_px``), or ``None`` when there is nothing to draw
    (no rows, no drawable value: ``description`` says which). ``description``: the chart in
    words, at most :data:`MAX_DESCRIPTION_CHARS`. ``notes``: what the reader may miss (values
    not shown, characters without a font), also on the chart's caption.
    """

    png: bytes | None
    description: str
    title: str
    width_px: int = 0
    height_px: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class _Points:
    """What is drawn: ``x`` per point (category index, number or matplotlib date), its
    ``labels`` in words, each series' values (NaN where not drawn) and what was skipped, by reason."""

    x: list[float]
    labels: list[str]
    series: dict[str, list[float]]
    texts: dict[str, list[str]]
    skipped: Counter[str]


def _floats(column: pa.ChunkedArray) -> list[float | None]:
    """``column`` as floats, ``None`` for null (integers beyond 2**53 rounded, huge decimals inf)."""
    return pc.cast(column, pa.float64(), safe=False).to_pylist()


def _why_not(value: float | None) -> str | None:
    """Why a y value is not drawn, or ``None`` when it is."""
    if value is None:
        return "empty"
    if not math.isfinite(value):
        return "not finite"
    return "too large to draw" if abs(value) > MAX_DRAWABLE else None


def _ordered(table: pa.Table, options: ChartOptions) -> pa.Table:
    """The rows drawn, in order: bars (and ``top_n``) largest first by the first ``y``, rows
    whose first ``y`` cannot be drawn after them (never ranked away by ``top_n``: their other
    series may be drawn, and they are counted as not shown); lines by ``x``."""
    first = _floats(table.column(options.y_columns[0]))
    ranked = [i for i, v in enumerate(first) if _why_not(v) is None]
    rest = [i for i, v in enumerate(first) if _why_not(v) is not None]
    if options.kind == "bar" or options.top_n:
        ranked.sort(key=lambda i: -(first[i] or 0.0))  # stable: ties keep the frame's order
    if options.top_n:
        ranked = ranked[:options.top_n]
    data = table.take(pa.array(ranked + rest, pa.int64()))
    if options.kind == "line":
        data = data.take(pc.sort_indices(data, sort_keys=[(options.x, "ascending")]))  # nulls last
    return data


def _x_kind(table: pa.Table, options: ChartOptions) -> XAxis:
    """A line over timestamps or dates has a time axis, over numbers a numeric one; bars are categories."""
    t = table.schema.field(options.x).type
    if options.kind != "line":
        return "category"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "time"
    return "number" if column_kind(t) == "number" else "category"


def _x_values(column: pa.ChunkedArray, kind: XAxis) -> list[float]:
    """x per row: matplotlib dates (days since its epoch, 1970-01-01 UTC) for ``time``, floats
    for ``number``, 0..n-1 for ``category``; NaN where a row has no usable x."""
    if kind == "category":
        return [float(i) for i in range(len(column))]
    if kind == "number":
        return [math.nan if v is None else v for v in _floats(column)]
    t = column.type
    per_day = (86_400.0 * {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[t.unit] if pa.types.is_timestamp(t)
               else 1.0 if pa.types.is_date32(t) else 86_400_000.0)
    from matplotlib.dates import date2num

    epoch = float(date2num(dt.datetime(1970, 1, 1)))  # 0 with matplotlib's default epoch
    ints = pc.cast(column, pa.int32() if pa.types.is_date32(t) else pa.int64()).to_pylist()  # its storage
    return [math.nan if v is None else epoch + v / per_day for v in ints]


def _points(data: pa.Table, options: ChartOptions, kind: XAxis, formats: Formats) -> _Points:
    """The drawable points of ``data`` (rows with no drawable value, or no usable x, are left out)."""
    xs = _x_values(data.column(options.x), kind)
    labels = [format_cell(v, formats) for v in data.column(options.x).to_pylist()]
    values = {c: _floats(data.column(c)) for c in options.y_columns}
    texts = {c: [format_cell(v, formats) for v in data.column(c).to_pylist()] for c in options.y_columns}
    skipped: Counter[str] = Counter()
    keep = []
    for i, x in enumerate(xs):
        reasons = [_why_not(values[c][i]) for c in options.y_columns]
        if not math.isfinite(x):
            skipped["without an x value"] += len(reasons)
            continue
        skipped.update(r for r in reasons if r)
        if any(r is None for r in reasons):
            keep.append(i)
    series = {c: [v if _why_not(v := values[c][i]) is None and v is not None else math.nan for i in keep]
              for c in values}
    if kind == "category":
        xs = [float(n) for n in range(len(keep))]
    else:
        xs = [xs[i] for i in keep]
    return _Points(xs, [labels[i] for i in keep], series, {c: [t[i] for i in keep] for c, t in texts.items()}, skipped)


def _caption(skipped: Counter[str]) -> str:
    """``"2 values not shown: not finite"``, or ``"3 values not shown: 2 not finite, 1 empty"``; ``""`` for none."""
    total = sum(skipped.values())
    if not total:
        return ""
    head = f"{total:,} {'value' if total == 1 else 'values'} not shown: "
    if len(skipped) == 1:
        return head + next(iter(skipped))
    return head + ", ".join(f"{n:,} {why}" for why, n in skipped.most_common())


def _describe(points: _Points, options: ChartOptions, title: str, notes: list[str]) -> str:
    """The chart in words, for the text part and ``alt``: its title, the first points (labels
    cut to 30 characters) and the notes, at most :data:`MAX_DESCRIPTION_CHARS` in all."""
    head = f"Chart: {title} ({options.kind}): "
    tail = "".join(f"; {n}" for n in notes)
    said: list[str] = []
    for i, label in enumerate(points.labels[:_DESCRIBED_POINTS]):
        point = f"{cut(label)} {'/'.join(cut(points.texts[c][i], 20) for c in options.y_columns)}"
        if len(head) + len(", ".join([*said, point])) + len(tail) + 20 > MAX_DESCRIPTION_CHARS:
            break
        said.append(point)
    more = f" (and {len(points.labels) - len(said):,} more)" if len(said) < len(points.labels) else ""
    return cut(head + ", ".join(said) + more + tail, MAX_DESCRIPTION_CHARS)


def _figure(points: _Points, options: ChartOptions, kind: XAxis, title: str, names: Mapping[str, str],
            caption: str, tz: str | None) -> Figure:
    """The figure of ``points`` (call within :func:`chart_style`)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGURE_SIZE_IN, dpi=DPI)
    fig.patch.set_edgecolor(BORDER)
    fig.patch.set_linewidth(2)
    ax = fig.add_subplot()
    count = len(options.y_columns)
    for i, column in enumerate(options.y_columns):
        ys = points.series[column]
        if options.kind == "bar":
            width = 0.8 / count
            shown = [(x + (i - (count - 1) / 2) * width, y) for x, y in zip(points.x, ys, strict=True) if math.isfinite(y)]
            ax.bar([x for x, _ in shown], [y for _, y in shown], width=width, label=cut(names[column]))
        else:
            ax.plot(points.x, ys, marker="o" if len(ys) <= 30 else "", markersize=4, label=cut(names[column]))
    setup_x_axis(ax, kind, points.labels, tz)
    ax.set_title(title, parse_math=False)
    ax.set_xlabel(cut(names[options.x], 60), parse_math=False)
    if count == 1:
        ax.set_ylabel(cut(names[options.y_columns[0]], 40), parse_math=False)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e4e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    if count > 1:
        ax.legend(frameon=False)
    if caption:
        fig.text(0.015, 0.02, cut(caption, 110), ha="left", va="bottom", fontsize=11, color=MUTED, parse_math=False)
    fig.tight_layout(rect=(0, 0.07 if caption else 0, 1, 1))
    return fig


def _checked(table: pa.Table, options: ChartOptions) -> None:
    """Raise ``ValueError`` for a missing column or a ``y`` that is not numeric (naming it)."""
    for column in (options.x, *options.y_columns):
        if column not in table.column_names:
            raise ValueError(f"no column {column!r}; there are: {', '.join(table.column_names)}")
    for column in options.y_columns:
        t = table.schema.field(column).type
        if column_kind(t) != "number":
            raise ValueError(f"y column {column!r} is {t}, not a number")


def chart_figure(table: pa.Table, options: ChartOptions, formats: Formats,
                 labels: Mapping[str, str] = {}) -> tuple[Figure | None, Chart]:
    """The matplotlib figure of the chart (``None`` when there is nothing to draw) and the
    :class:`Chart` without its image (description, title, notes). Call within
    :func:`~.chart_axes.chart_style`; :func:`draw_chart` is what callers use.

    Raises:
        ValueError: a column is missing, or ``y`` is not numeric (names the column).
    """
    _checked(table, options)
    names = {c: labels.get(c) or c for c in (options.x, *options.y_columns)}
    title = cut(options.title or f"{', '.join(names[c] for c in options.y_columns)} by {names[options.x]}", _TITLE_CHARS)
    if table.num_rows == 0:
        return None, Chart(None, "No chart: no rows", title)
    kind = _x_kind(table, options)
    points = _points(_ordered(table, options), options, kind, formats)
    caption = _caption(points.skipped)
    if not points.x:
        return None, Chart(None, f"No chart: nothing to draw ({caption})", title, notes=[caption])
    notes = [caption] if caption else []
    words = [title, *points.labels, *names.values()]
    if not font_families()[1] and any(has_wide_chars(w) for w in words):
        notes.append("CJK characters may not show: no CJK font installed")
    x_type = table.schema.field(options.x).type
    # Only an instant moves to formats.timezone; naive timestamps and dates are drawn as written.
    zoned = pa.types.is_timestamp(x_type) and bool(x_type.tz)
    tz = (formats.timezone or x_type.tz) if zoned else None
    fig = _figure(points, options, kind, title, names, "; ".join(notes), tz)
    return fig, Chart(None, _describe(points, options, title, notes), title, notes=notes)


def draw_chart(table: pa.Table, options: ChartOptions, formats: Formats, labels: Mapping[str, str] = {}) -> Chart:
    """Draw ``options`` over ``table`` (the frame, or its summary) as a PNG.

    ``labels``: ``{column: label}`` (``TableOptions.labels()``) for the axis titles, legend and
    default title; other columns by name. With no rows, or no drawable value, the chart has
    no image (``png`` is ``None``) and its description says why.

    Raises:
        ValueError: a column is missing, or ``y`` is not numeric (names the column).
    """
    with chart_style():
        fig, chart = chart_figure(table, options, formats, labels)
        if fig is None:
            return chart
        out = io.BytesIO()
        fig.savefig(out, format="png")
    width, height = fig.canvas.get_width_height(physical=True)
    return dataclasses.replace(chart, png=out.getvalue(), width_px=width, height_px=height)


def chart_part(table: pa.Table, options: ChartOptions, formats: Formats,
               labels: Mapping[str, str] = {}) -> tuple[Attachment | None, Markup, str, list[str]]:
    """The chart for one message: the inline PNG (``None`` when there is none), the HTML that
    shows it (``{{ chart }}``), its description (``{{ chart_text }}``) and notes for the
    delivery report. Never raises: a chart that cannot be drawn (any exception) leaves the
    message without it, with the note ``chart not drawn: <reason>`` and a logged warning."""
    try:
        chart = draw_chart(table, options, formats, labels)
    except Exception as exc:  # noqa: BLE001 - the message goes without its chart, and says so
        reason = cut(str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}", 300)
        # Once per reason, not per message (the report's notes say it for each). A ValueError is
        # ours (a column missing or not numbers: no data in it); another's text may quote data.
        said = reason if isinstance(exc, ValueError) else type(exc).__name__
        warn_once(f"chart not drawn: {said} (the delivery report's notes say it for each message)")
        return None, Markup(""), "", [f"chart not drawn: {reason}"]
    if chart.png is None:  # no rows (nothing to say), or no drawable value (said in the report)
        why = chart.description.removeprefix("No chart: ")
        return None, Markup(""), chart.description, [f"chart not drawn: {why}"] if chart.notes else []
    cid = f"chart.{uuid.uuid4().hex}@mailgem"
    html = Markup('<img src="cid:{}" width="{}" alt="{}" style="display:block;max-width:100%;height:auto;'
                  'border:0;">').format(cid, DISPLAY_WIDTH_PX, chart.description)
    return (Attachment("chart.png", chart.png, "image", "png", content_id=cid), html, chart.description,
            [f"chart: {n}" for n in chart.notes])
