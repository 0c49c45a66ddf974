"""Compose one email from the rows it carries: context, recipients, bodies, table, attachments.

A :class:`Composer` is made once per run (templates compile once and are cached) and turns each
:class:`Unit` — the whole frame, one group, or one row — into an ``EmailMessage``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any, TypeVar

import css_inline
import pyarrow as pa
from markupsafe import Markup
from pydantic import SecretStr

from mailgem.connections.errors import MessageTooLargeError
from mailgem.connections.headers import PrefoldedHeader, prefolded, text_header

from .aggregates import Aggregates
from .attachments import Attachment, build_attachment, noted_default_name
from .file_names import file_name_or_default
from .files import FileAttachment, LinkedFiles
from .protect import Protector
from .checks import MessageBuildError, RecipientError, encodable as _encodable, estimated_size
from .unit import Envelope, SplitNeeded, Unit, split_unit
from .chart import chart_part
from .layout import Layout, LayoutMessage
from .message import build_message, run_headers
from ..properties import EmailProperties
from .recipients import envelope_of
from .spliced import SPLICE_MIN_BYTES, SplicedMessage, placeholder
from .render import DEFAULT_HTML, DEFAULT_TEXT, NullKey, base_context, one_line, render
from .section_views import default_bodies, input_rows, options_table, render_sections
from .table import Table, fit_rows, summarise
from .table_html import html_document, html_table, text_table
from ..validate import MAX_BODY_BYTES, MAX_SUBJECT_CHARS, check_header, is_template

__all__ = ["Composer", "Unit", "Envelope", "RecipientError", "MessageBuildError", "SplitNeeded", "split_unit",
           "estimated_size"]

# What Composer.message returns (see there).
_Message = TypeVar("_Message", EmailMessage, LayoutMessage, SplicedMessage)

# The user's own <style> blocks become inline styles too; remote stylesheets are never fetched.
_INLINER = css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)


def _noted(message: _Message, attachments: list[Attachment], notes: Sequence[str] = ()) -> _Message:
    """``message`` with attribute ``notes``: its attachments' notes and ``notes`` (the chart's:
    ``chart not drawn: ...``) joined, or ``None``. None of the message classes has
    ``__slots__``; the attribute travels no further than the report."""
    found = [a.notes for a in attachments if a.notes] + list(notes)
    message.notes = "; ".join(found) or None  # type: ignore[attr-defined]
    return message


class Composer:
    """Builds messages for one run of a gem.

    Args:
        props: the gem's properties.
        job: the gem's name (``job`` in templates).
        params: ``params`` in templates.
        charset: the connection's charset for text parts.
        run_ts: the run's timestamp (UTC).
        size_limit: the largest message to build, in bytes as transmitted; what happens to a
            message over it is ``attachments_over_limit`` (error, compress, split).
        special_domains: the connection's ``allowed_special_domains``: recipients there may use
            special-use or single-label domains (internal relays).
        passwords: ``{secret name: password}`` of the ``protect`` options, read for this run
            (:func:`mailgem.gems.email.run.passwords.protect_passwords`); ``None`` for previews,
            which encrypt with a throwaway password (see :class:`Protector`).
        base_dir: where relative ``files`` paths start (``None``: the current directory).
    """

    def __init__(self, props: EmailProperties, *, job: str, params: dict[str, Any], charset: str,
                 run_ts: dt.datetime, size_limit: int | None = None, special_domains: tuple[str, ...] = (),
                 passwords: Mapping[str, SecretStr] | None = None, base_dir: Path | None = None) -> None:
        self.props = props
        self._protect = Protector(passwords, run_ts)
        self._files = LinkedFiles(props.files, base_dir, size_limit, props.attachments_over_limit, self._protect)
        self.special_domains = special_domains  # the connection's allowed_special_domains
        # Largest message to build, bytes as transmitted (max_message_bytes, the server's SIZE).
        self.size_limit = size_limit
        self.job = job
        self.charset = charset
        self.base = base_context(job, run_ts, params)
        # One origination date per run (RFC 5322 §3.6.1), parsed once and shared by every message.
        self._date = prefolded("Date", format_datetime(run_ts))
        self._headers = run_headers(props, special_domains)  # static ones; templated values are rendered per message
        self._header_templates = [(n, v) for n, v in props.headers.items() if is_template(v)]
        self._layouts: dict[tuple[bool, bool, bool], Layout] = {}

    def run_key(self) -> str:
        """The ledger's run key, rendered from ``ledger.run_key``."""
        template = self.props.ledger.run_key if self.props.ledger else "{{ run_date }}"
        return render("ledger.run_key", template, self.base).strip()

    # -- recipients -----------------------------------------------------------------------

    def envelope(self, unit: Unit, ctx: dict[str, Any] | None = None) -> Envelope:
        """Recipients of ``unit`` (:func:`~.recipients.envelope_of`, with its template context)."""
        return envelope_of(self.props, unit, ctx if ctx is not None else self.context(unit), self.special_domains)

    # -- bodies ---------------------------------------------------------------------------

    def context(self, unit: Unit) -> dict[str, Any]:
        """Template context of ``unit`` (without the rendered table).

        Raises:
            MessageBuildError: the unit's data cannot make an email (:attr:`Unit.problem`).
        """
        if unit.problem is not None:
            raise MessageBuildError(unit.problem)
        row = unit.extra.get("row")
        # per_row: the row's keys are the columns, in order (cheaper than asking Arrow each time)
        ctx = dict(self.base, row_count=unit.row_count, columns=list(row) if row is not None else unit.table.column_names)
        ctx["rows"] = [row] if row is not None else unit.table.slice(0, self.props.table.max_rows).to_pylist()
        ctx["part"] = None  # a Part when the rows were split over several messages
        ctx["aggregates"] = Aggregates(unit.table)  # computed only when a template reads it
        ctx["in1_row_count"] = unit.in1.num_rows if unit.in1 is not None else 0
        ctx.update(unit.extra)
        ctx["total_row_count"] = ctx["part"].total_rows if ctx["part"] is not None else unit.row_count
        group = unit.extra.get("group")
        if group is not None and None in group.values():
            # A key must be visible ("Region (null): 9 rows", "(null).xlsx"), even when empty cells are blank.
            null = NullKey(self.props.formats.na_rep or "(null)")
            ctx["group"] = {k: null if v is None else v for k, v in group.items()}
        return ctx

    def compose(self, unit: Unit, envelope: Envelope | None = None) -> tuple[EmailMessage, Envelope]:
        """Render ``unit`` into an ``EmailMessage`` (no Message-ID or From yet).

        Raises:
            RecipientError, TemplateError, MessageTooLargeError (a body over 10 MB),
            MailgemError (a rendered subject over 998 characters).
        """
        envelope = envelope or self.envelope(unit)
        ctx = self.context(unit)
        subject, text, html, attachments, notes = self._render(unit, ctx)
        message = build_message(to=envelope.to, cc=envelope.cc, subject=subject,
                                headers=[self._date, *self._headers, *self._templated_headers(ctx)],
                                text=text, html=html, attachments=attachments, charset=self.charset)
        return _noted(message, attachments, notes), envelope

    def _templated_headers(self, ctx: dict[str, Any]) -> list[PrefoldedHeader]:
        """Custom headers whose values are templates, rendered for this message.

        Raises:
            MessageBuildError: a rendered value cannot be a header (a line break from the data,
                a control character); names the header.
        """
        out = []
        for name, source in self._header_templates:
            value = render(f"headers.{name}", source, ctx).strip()
            problem = check_header(name, value)
            if problem:
                raise MessageBuildError(f"headers.{name}: the rendered value {value[:80]!r} is not allowed: {problem}")
            out.append(text_header(name, value))
        return out

    def message(self, unit: Unit, envelope: Envelope, message_id: str,
                ctx: dict[str, Any] | None = None) -> EmailMessage | LayoutMessage | SplicedMessage:
        """Render ``unit`` for sending, with ``message_id``.

        Messages without attachments are filled into the run's :class:`Layout` for their shape
        (the same bytes, a fraction of the work); others are built as an ``EmailMessage``, as a
        :class:`SplicedMessage` when an attachment is large (the same bytes again). Each has
        an attribute ``notes``: what was changed in its attachments' data without failing it
        (XLSX cells cut to Excel's limit), or ``None`` (always, for a :class:`LayoutMessage`:
        it has no attachments); the sender copies it into the delivery report.
        ``ctx`` is :meth:`context` of ``unit`` when the caller already has it.
        """
        ctx = ctx if ctx is not None else self.context(unit)
        subject, text, html, attachments, notes = self._render(unit, ctx)
        templated = self._templated_headers(ctx) if self._header_templates else []
        # UTF-8 headers (RFC 6532) and per-message header values take the ordinary path.
        if not attachments and not envelope.smtputf8 and not templated:
            shape = (bool(envelope.cc), text is not None, html is not None)
            layout = self._layouts.get(shape)
            if layout is None:
                layout = self._layouts[shape] = Layout.build(headers=[self._date, *self._headers], charset=self.charset,
                                                             has_cc=shape[0], has_text=shape[1], has_html=shape[2])
            filled = layout.fill(to=envelope.to, cc=envelope.cc, subject=subject, message_id=message_id,
                                 text=text, html=html)
            if filled is not None:
                return _noted(filled, attachments, notes) if notes else filled
        # Large attachments are spliced in after the stdlib flattened the rest (same bytes, spliced.py).
        marks = {id(a): placeholder() for a in attachments if a.content_id is None and len(a.data) >= SPLICE_MIN_BYTES}
        stand_ins = [dataclasses.replace(a, data=marks[id(a)]) if id(a) in marks else a for a in attachments]
        message = build_message(to=envelope.to, cc=envelope.cc, subject=subject,
                                headers=[self._date, *self._headers, *templated],
                                text=text, html=html, attachments=stand_ins, charset=self.charset)
        message["Message-ID"] = message_id
        if marks:
            return _noted(SplicedMessage(message, [(marks[id(a)], a.data) for a in attachments if id(a) in marks]),
                          attachments, notes)
        return _noted(message, attachments, notes)

    def _render(self, unit: Unit, ctx: dict[str, Any] | None = None,
                compress: bool = False) -> tuple[str, str | None, str | None, list[Attachment], list[str]]:
        """Subject, text body, HTML body, attachments and notes (the chart's) of ``unit``, within
        :attr:`size_limit`.

        Raises:
            SplitNeeded: over the limit with ``attachments_over_limit: split``.
            MessageTooLargeError: over the limit otherwise (after compressing, with ``compress``).
        """
        rendered = self._render_once(unit, ctx, compress)
        if self.size_limit is None or not rendered[3]:
            return rendered
        size = estimated_size(*rendered[:4])
        if size <= self.size_limit:
            return rendered
        policy = self.props.attachments_over_limit
        if policy == "compress" and not compress:
            return self._render(unit, ctx, compress=True)
        files = [a for a in rendered[3] if isinstance(a, FileAttachment)]  # whole in every part: never split
        if policy == "split" and unit.row_count > 1 and "part" not in unit.extra:
            data = sum(estimated_size("", None, None, [a]) for a in rendered[3] if not isinstance(a, FileAttachment))
            room = self.size_limit - (size - data)
            if room > 0:
                raise SplitNeeded(f"{size:,} bytes over the limit of {self.size_limit:,}",
                                  parts=min(unit.row_count, math.ceil(data / room * 1.1)))
        raise MessageTooLargeError(
            f"the message would be {size:,} bytes with its attachments, over the limit of {self.size_limit:,} bytes"
            + ("" if policy != "error" else "; set attachments_over_limit: compress or split")
            + (f"; its files ({', '.join(a.file_name for a in files)}: {sum(len(a.data) for a in files):,} bytes) are "
               "attached whole, never split or compressed" if files else ""),
            size_bytes=size, limit_bytes=self.size_limit)

    def _attachments(self, unit: Unit, ctx: dict[str, Any], compress: bool) -> list[Attachment]:
        """The unit's attachments (CSV gzipped with ``compress``), named by their templates, a
        split part's number in the name.

        Raises:
            MessageBuildError: the data cannot be written in an attachment's format (names it).
        """
        p = self.props
        part_of = unit.extra.get("part")  # a Part when the unit's rows were split to fit the size limit
        specs = [spec.model_copy(update={"compression": "gzip"}) if compress and spec.format == "csv"
                 and spec.compression == "none" and spec.protect is None else spec for spec in p.attachments]
        attachments = []
        for i, spec in enumerate(specs):
            name, unnamed = file_name_or_default(render(f"attachments[{i}].file_name", spec.file_name, ctx))
            if part_of is not None:
                i_of = f"-part{part_of.number}of{part_of.parts}"
                stem, dot, extension = name.rpartition(".")
                name = f"{stem}{i_of}.{extension}" if dot else f"{name}{i_of}"
            try:
                attachment = build_attachment(input_rows(unit, spec.from_, f"attachments[{i}]"), spec, name, p.formats.timezone, p.table.presentation, p.formats)
            except ValueError as exc:
                raise MessageBuildError(f"attachments[{i}] ({name}): {exc}") from None
            if spec.protect is not None:  # an encrypted ZIP around the file (content/protect.py)
                attachment = self._protect(attachment, spec.protect, f"attachments[{i}]")
            attachments.append(noted_default_name(attachment, f"attachments[{i}].file_name") if unnamed else attachment)
        return attachments

    def _table(self, unit: Unit, summary: pa.Table | None) -> Table | None:
        """The body table of ``unit`` (its ``summary`` when configured), formatted; ``None`` when off.

        Raises:
            MessageBuildError: a column's format does not fit it, or totals or highlight name a
                column the table does not have.
        """
        drawn = input_rows(unit, self.props.table.from_, "table")
        # The "showing N of M" note counts the unit's rows (the table may hold only the first ones).
        count = unit.row_count if self.props.table.from_ == "in0" else drawn.num_rows
        return options_table(drawn, summary, self.props.table, self.props.formats, count)

    def _render_once(self, unit: Unit, ctx: dict[str, Any] | None,
                     compress: bool) -> tuple[str, str | None, str | None, list[Attachment], list[str]]:
        p = self.props
        ctx = ctx if ctx is not None else self.context(unit)
        part_of = unit.extra.get("part")
        attachments = self._attachments(unit, ctx, compress)
        sections = render_sections(p, unit, ctx, bool(attachments))
        top = not sections.replaces_top  # the default bodies show the sections instead of the top-level views
        drawn = input_rows(unit, p.table.from_, "table") if top else unit.table  # the table's rows, and the chart's
        summary = summarise(drawn, p.table.summary) if p.table.summary and top else None
        table = self._table(unit, summary) if top else None
        shown_attached = any(a.from_ == p.table.from_ for a in p.attachments)  # the table's own rows, in full
        note = "the full data is attached" if shown_attached and not p.table.summary else ""
        attachments += self._files.attachments(ctx) if self._files else []
        chart_html, chart_text = Markup(""), ""
        notes: list[str] = []  # the chart's, for the delivery report
        if p.chart is not None and top:  # a chart that cannot be drawn leaves the message without it, and a note
            image, chart_html, chart_text, notes = chart_part(summary if summary is not None else drawn, p.chart,
                                                              p.formats, p.table.labels())
            attachments.extend([image] if image is not None else [])
        attachments.extend(sections.images)
        notes.extend(sections.notes)
        default_html, default_text = default_bodies(sections, DEFAULT_HTML, DEFAULT_TEXT)
        html_src = p.html_body if p.html_body is not None else (default_html if p.text_body is None else None)

        def page(n: int, html: bool) -> dict[str, Any]:
            # Only the body being rendered gets its tables (the HTML is measured alone); every table
            # shows at most n rows (sections: its own max_rows caps it).
            top_n = min(n, len(table.rows)) if table else 0
            return dict(ctx, shown_rows=top_n, truncated=table is not None and top_n < table.total,
                        table=html_table(table, top_n, note) if table and html else "",
                        table_text=text_table(table, top_n, charset=self.charset) if table and not html else "",
                        chart=chart_html, chart_text=chart_text, sections=sections.html(n) if html else "",
                        sections_text=sections.text(n, self.charset) if not html else "")

        rendered: dict[int, str | None] = {}  # row count -> HTML body: the search's last try is the body

        def html_body(n: int) -> str | None:
            if html_src is None:  # HTML unless the user chose text only
                return None
            if n not in rendered:
                html = render("html_body", html_src, page(n, True), html=True)
                rendered[n] = html_document(_INLINER.inline(html) if "<style" in html.lower() else html, self.charset)
            return rendered[n]

        def bodies(n: int) -> tuple[str, str | None]:
            # Always a text part (what clients fall back to).
            return render("text_body", p.text_body if p.text_body is not None else default_text, page(n, False)), html_body(n)

        def html_bytes(n: int) -> bytes:
            # Measured as transmitted: every line ends in CRLF on the wire (RFC 5322 §2.1).
            return (html_body(n) or "").replace("\n", "\r\n").encode()

        shown = max(min(p.table.max_rows, len(table.rows)) if table else 0, sections.most_rows)
        if (table is not None or sections.most_rows) and html_src is not None:
            shown, _ = fit_rows(html_bytes, shown, p.table.max_html_bytes)
        text, html = bodies(shown)
        for part, body in (("text_body", text), ("html_body", html)):
            size = len(body.encode()) if body is not None else 0
            if size > MAX_BODY_BYTES:
                raise MessageTooLargeError(f"rendered {part} is {size:,} bytes, over {MAX_BODY_BYTES:,}",
                                           size_bytes=size, limit_bytes=MAX_BODY_BYTES)
        subject = one_line(render("subject", p.subject, ctx))
        if part_of is not None:
            subject = f"{subject} (part {part_of.number} of {part_of.parts})"
        if len(subject) > MAX_SUBJECT_CHARS:
            raise MessageBuildError(f"subject: rendered subject is {len(subject)} characters, over {MAX_SUBJECT_CHARS} "
                                    "(RFC 5322 §2.1.1)")
        # Header text is UTF-8 (RFC 2047 encoded words or RFC 6532); bodies are in the connection's charset.
        _encodable("subject", subject, "utf-8", unit.table)
        for part, body in (("text_body", text), ("html_body", html)):
            if body is not None:
                _encodable(part, body, self.charset, unit.table)
        return subject, text, html, attachments, notes
