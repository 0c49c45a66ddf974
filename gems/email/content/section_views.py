"""The body's sections for one message (:class:`~mailgem.gems.email.sections.Section`): each
one's title, text, chart and table, as HTML (``{{ sections }}``) and as text
(``{{ sections_text }}``).

Each section's table is made from its own rows (the message's, or the second input's with
``from: in1``) with its own summary, columns, labels, totals and highlights; each chart is its
own inline image with its own Content-ID. The HTML body's budget (``table.max_html_bytes``) is
shared: the composer asks for the body at a row count ``n`` and every table shows at most ``n``
of its rows (its own ``max_rows`` still caps it), so short tables stay whole and the long ones
are cut alike, each saying "Showing N of M rows".
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from markupsafe import Markup, escape

from ..properties import EmailProperties, Formats, Section, TableOptions
from .attachments import Attachment
from .chart import chart_part
from .checks import MessageBuildError
from .render import DEFAULT_HTML, DEFAULT_TEXT, one_line, render
from .table import Table, format_rows, summarise
from .table_html import html_table, text_table
from .unit import Unit

__all__ = ["Sections", "SectionView", "render_sections", "options_table", "input_rows", "SECTIONS_HTML", "SECTIONS_TEXT", "NO_SECTIONS",
           "default_bodies"]

# The default bodies of a message with sections: the first line of the usual ones, then the
# sections (in place of the top-level chart and table).
SECTIONS_HTML = DEFAULT_HTML.split("</p>", 1)[0] + "</p>\n{{ sections }}\n"
SECTIONS_TEXT = (DEFAULT_TEXT.split("\n", 1)[0] + "\n{% if row_count == 0 %}\nThe result was empty: no rows matched.\n"
                 "{% endif %}\n{{ sections_text }}\n")

_FONT = "font-family:Arial,Helvetica,sans-serif;color:#101828"
_H2 = f"{_FONT};font-size:16px;font-weight:bold;margin:20px 0 6px"
_P = f"{_FONT};font-size:14px;margin:6px 0"
_PARAGRAPHS = re.compile(r"\n\s*\n")


def options_table(rows: pa.Table, summary: pa.Table | None, options: TableOptions, formats: Formats,
                  row_count: int) -> Table | None:
    """The table ``options`` make of ``rows`` (or of their ``summary``), formatted; ``None``
    when ``options.enabled`` is false. ``row_count``: how many rows ``rows`` stands for (the
    "Showing N of M" note; a summary counts its own).

    Raises:
        MessageBuildError: a column missing, a format that does not fit its column, or totals
            or highlight naming a column the table does not have.
    """
    if not options.enabled:
        return None
    shown = summary if summary is not None else rows
    if options.column_names:
        _present(options.column_names, shown, "columns")
        shown = shown.select(options.column_names)
    try:
        return format_rows(shown, options.max_rows, formats, total=None if summary is not None else row_count,
                           max_cell_chars=options.max_cell_chars, columns=options.presentation, totals=options.totals,
                           highlight=options.highlight)
    except ValueError as exc:
        raise MessageBuildError(str(exc)) from None


def _present(names: Sequence[str], table: pa.Table, option: str) -> None:
    """Raise :class:`MessageBuildError` naming ``option``'s columns that ``table`` lacks (rows
    from ``in1`` are not checked before the run; the frame's are)."""
    missing = [n for n in dict.fromkeys(names) if n not in table.column_names]
    if missing:
        raise MessageBuildError(f"{option}: no column {', '.join(map(repr, missing))}; there are: "
                                f"{', '.join(table.column_names)}")


@dataclass(frozen=True)
class SectionView:
    """One section of one message, rendered but for its table's rows: ``title`` (one line),
    ``text`` (plain), its ``table`` (``None``: none) showing at most ``limit`` rows with
    ``note`` after "Showing N of M rows", and its chart's HTML and words."""

    title: str
    text: str
    table: Table | None
    limit: int
    note: str
    chart_html: Markup = Markup("")
    chart_text: str = ""

    def html(self, n: int) -> Markup:
        """The section as HTML, its table showing at most ``n`` rows."""
        out = [Markup('<h2 style="{}">{}</h2>\n').format(_H2, self.title)] if self.title else []
        for paragraph in _PARAGRAPHS.split(self.text) if self.text else []:
            lines = Markup("<br>\n").join(escape(line.strip()) for line in paragraph.strip().splitlines())
            out.append(Markup('<p style="{}">{}</p>\n').format(_P, lines))
        out.append(self.chart_html)
        if self.table is not None:
            out.append(html_table(self.table, min(n, self.limit), self.note))
        return Markup('<div class="mg-section">\n{}</div>\n').format(Markup("").join(out))

    def text_part(self, n: int, charset: str) -> str:
        """The section as plain text (title underlined), its table showing at most ``n`` rows."""
        out = [f"{self.title}\n{'-' * min(len(self.title), 72)}"] if self.title else []
        out += [self.text] if self.text else []
        out += [self.chart_text] if self.chart_text else []
        if self.table is not None:
            out.append(text_table(self.table, min(n, self.limit), charset=charset))
        return "\n\n".join(out)


@dataclass(frozen=True)
class Sections:
    """The sections of one message. ``images``: their charts' inline parts; ``notes``: what the
    delivery report says of them (a chart not drawn); ``replaces_top``: the default bodies show
    the sections instead of the top-level table and chart, which are then not made."""

    views: list[SectionView] = field(default_factory=list)
    images: list[Attachment] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    replaces_top: bool = False

    @property
    def most_rows(self) -> int:
        """The most rows any section's table may show (0 without tables)."""
        return max((v.limit for v in self.views if v.table is not None), default=0)

    def html(self, n: int) -> Markup:
        """``{{ sections }}``: every section as HTML, each table showing at most ``n`` rows."""
        return Markup("").join(v.html(n) for v in self.views)

    def text(self, n: int, charset: str) -> str:
        """``{{ sections_text }}``: every section as text, each table showing at most ``n`` rows."""
        return "\n\n\n".join(v.text_part(n, charset) for v in self.views)


NO_SECTIONS = Sections()


def input_rows(unit: Unit, source: str, where: str) -> pa.Table:
    """The rows a part of the message (``where``) shows: ``unit``'s own (``source`` ``in0``) or
    its second input's (``in1``).

    Raises:
        MessageBuildError: ``from: in1`` without a second input.
    """
    if source == "in0":
        return unit.table
    if unit.in1 is None:
        raise MessageBuildError(f"{where}: from: in1, but the gem has no second input: pass it (apply(spark, in0, in1)) "
                                "or show the message's rows with from: in0")
    return unit.in1


def _rows(unit: Unit, section: Section, where: str) -> tuple[pa.Table, int]:
    """The rows ``section`` shows and how many rows they stand for (:func:`input_rows`)."""
    rows = input_rows(unit, section.from_, where)
    return rows, unit.row_count if section.from_ == "in0" else rows.num_rows


def _view(i: int, section: Section, props: EmailProperties, unit: Unit, ctx: dict[str, Any],
          attached: bool) -> tuple[SectionView, list[Attachment], list[str]]:
    """Section ``i`` of ``unit``'s message, its chart's image (if drawn) and notes."""
    where = f"sections[{i}]"
    rows, row_count = _rows(unit, section, where)
    options = section.table
    if section.title is not None or section.text is not None:
        shown = options.max_rows if options is not None else TableOptions().max_rows
        ctx = dict(ctx, section={"row_count": row_count, "columns": rows.column_names, "from": section.from_,
                                 "rows": rows.slice(0, shown).to_pylist()})
    title = one_line(render(f"{where}.title", section.title, ctx)) if section.title is not None else ""
    text = render(f"{where}.text", section.text, ctx).strip() if section.text is not None else ""
    summary = None
    if options is not None and options.summary is not None:
        used = [*options.summary.group_by, *(a.column for a in options.summary.aggregates)]
        try:
            _present(used, rows, "summary")
            summary = summarise(rows, options.summary)
        except (MessageBuildError, pa.ArrowException) as exc:  # ArrowException: an aggregate of the wrong type
            raise MessageBuildError(f"{where}.table.{exc}" if isinstance(exc, MessageBuildError)
                                    else f"{where}.table.summary: {exc}") from None
    table = None
    if options is not None:
        try:
            table = options_table(rows, summary, options, props.formats, row_count)
        except MessageBuildError as exc:
            raise MessageBuildError(f"{where}.table: {exc}") from None
    note = "the full data is attached" if attached and summary is None else ""
    view = SectionView(title, text, table, len(table.rows) if table is not None else 0, note)
    if section.chart is None:
        return view, [], []
    labels = options.labels() if options is not None else {}
    image, chart_html, chart_text, notes = chart_part(summary if summary is not None else rows, section.chart,
                                                      props.formats, labels)
    images = [dataclasses.replace(image, file_name=f"section-{i + 1}-chart.png")] if image is not None else []
    return (dataclasses.replace(view, chart_html=chart_html, chart_text=chart_text), images,
            [f"{where} {n}" for n in notes])


def render_sections(props: EmailProperties, unit: Unit, ctx: dict[str, Any], attached: bool) -> Sections:
    """The sections of ``unit``'s message (:data:`NO_SECTIONS` when the properties have none).
    ``ctx``: the message's template context (title and text also see ``section``: its
    ``row_count``, ``columns``, first ``rows`` and ``from``); ``attached``: the message has
    attachments (a table of rows then says the full data is attached).

    Raises:
        MessageBuildError: a section's rows cannot make its table (a column missing, a format
            that does not fit), or ``from: in1`` without a second input; names the section.
        TemplateError: a title or text template failed.
    """
    if not props.sections:
        return NO_SECTIONS
    views: list[SectionView] = []
    images: list[Attachment] = []
    notes: list[str] = []
    for i, section in enumerate(props.sections):
        view, image, said = _view(i, section, props, unit, ctx, attached)
        views.append(view)
        images += image
        notes += said
    return Sections(views, images, notes, replaces_top=props.html_body is None and props.text_body is None)


def default_bodies(sections: Sections, html: str, text: str) -> tuple[str, str]:
    """The default HTML and text bodies: :data:`SECTIONS_HTML` and :data:`SECTIONS_TEXT` for a
    message with sections, else ``html`` and ``text`` (the usual ones)."""
    return (SECTIONS_HTML, SECTIONS_TEXT) if sections.views else (html, text)

