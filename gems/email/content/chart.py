"""The inline chart: a PNG drawn with matplotlib's Agg backend (no display), sized for a phone.

The image is 1,200 px wide and shown at 600 px (2x density: sharp on high-resolution screens,
within the 600 px mail clients lay out). It travels in the message as a ``multipart/related``
part with a ``Content-ID`` the HTML references as ``cid:`` (RFC 2392) — no remote image, so
Gmail and Outlook show it without "display images". The text part and the ``alt`` attribute
carry the same numbers in words.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ..properties import ChartOptions, Formats
from .table import format_cell

__all__ = ["Chart", "draw_chart", "DISPLAY_WIDTH_PX", "PIXEL_RATIO"]

DISPLAY_WIDTH_PX = 600
PIXEL_RATIO = 2
_HEIGHT_PX = 340
_DPI = 100
_DESCRIBED_POINTS = 12  # the text description names at most this many points


@dataclass(frozen=True)
class Chart:
    """A drawn chart: ``png`` bytes, its ``description`` in words, ``title`` and pixel size."""

    png: bytes
    description: str
    title: str
    width_px: int
    height_px: int


def _chart_data(table: pa.Table, options: ChartOptions) -> pa.Table:
    data = table.select([options.x, *options.y_columns])
    first = options.y_columns[0]
    if options.kind == "bar" or options.top_n:
        # Largest first: the bars a reader looks for; nulls last.
        data = data.take(pc.sort_indices(data, sort_keys=[(first, "descending")]))  # nulls last (Arrow's default)
    if options.top_n:
        data = data.slice(0, options.top_n)
    if options.kind == "line":
        data = data.take(pc.sort_indices(data, sort_keys=[(options.x, "ascending")]))
    return data


def draw_chart(table: pa.Table, options: ChartOptions, formats: Formats) -> Chart:
    """Draw ``options`` over ``table`` (the frame, or its summary).

    Raises:
        ValueError: a column is missing, or ``y`` is not numeric (names the column).
    """
    for column in (options.x, *options.y_columns):
        if column not in table.column_names:
            raise ValueError(f"chart: no column {column!r}; there are: {', '.join(table.column_names)}")
    for column in options.y_columns:
        t = table.schema.field(column).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
            raise ValueError(f"chart: y column {column!r} is {t}, not a number")
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    from matplotlib.figure import Figure

    data = _chart_data(table, options)
    labels = [format_cell(v, formats) for v in data.column(options.x).to_pylist()]
    title = options.title or f"{', '.join(options.y_columns)} by {options.x}"
    fig = Figure(figsize=(DISPLAY_WIDTH_PX * PIXEL_RATIO / _DPI / PIXEL_RATIO, _HEIGHT_PX / _DPI), dpi=_DPI * PIXEL_RATIO)
    ax = fig.add_subplot()
    positions = list(range(len(labels)))
    series = len(options.y_columns)
    for i, column in enumerate(options.y_columns):
        values = [float(v) if v is not None else float("nan") for v in data.column(column).to_pylist()]
        if options.kind == "bar":
            width = 0.8 / series
            ax.bar([p + (i - (series - 1) / 2) * width for p in positions], values, width=width, label=column)
        else:
            ax.plot(positions, values, marker="o", label=column)
    ax.set_xticks(positions, labels, rotation=45 if len(labels) > 8 else 0, ha="right" if len(labels) > 8 else "center",
                  fontsize=8)
    ax.set_title(title, fontsize=11)
    ax.spines[["top", "right"]].set_visible(False)
    if series > 1:
        ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    width, height = fig.canvas.get_width_height(physical=True)
    return Chart(out.getvalue(), _describe(data, options, labels, title, formats), title, width, height)


def _describe(data: pa.Table, options: ChartOptions, labels: list[str], title: str, formats: Formats) -> str:
    """The chart in words, for the text part and ``alt``: its title and the first points."""
    points = []
    for i, label in enumerate(labels[:_DESCRIBED_POINTS]):
        values = [format_cell(data.column(c)[i].as_py(), formats) for c in options.y_columns]
        points.append(f"{label} {'/'.join(values)}")
    more = f" (and {len(labels) - _DESCRIBED_POINTS} more)" if len(labels) > _DESCRIBED_POINTS else ""
    return f"Chart: {title} ({options.kind}): " + ", ".join(points) + more
