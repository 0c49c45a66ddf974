"""Compose one email from the rows it carries: context, recipients, bodies, table, attachments.

A :class:`Composer` is made once per run (templates compile once and are cached) and turns each
:class:`Unit` — the whole frame, one group, or one row — into an ``EmailMessage``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses
from typing import Any

import css_inline
import pyarrow as pa

from connections.errors import MailgemError, MessageTooLargeError
from connections.headers import prefolded

from .attachments import build_csv
from .attachments import Attachment
from .layout import Layout, LayoutMessage
from .message import build_message, run_headers
from .properties import ADDRESS_SPECIALS, EmailProperties, split_addresses
from .render import DEFAULT_HTML, DEFAULT_TEXT, base_context, one_line, render
from .table import fit_rows, format_rows, html_table, summarise, text_table
from .validate import MAX_BODY_BYTES, MAX_SUBJECT_CHARS, address_problem, is_template

__all__ = ["Composer", "Unit", "Envelope", "RecipientError", "message_id_for"]

# The user's own <style> blocks become inline styles too; remote stylesheets are never fetched.
_INLINER = css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)


class RecipientError(MailgemError, ValueError):
    """A recipient taken from data (a column or a template) is not a valid address."""


@dataclass(frozen=True)
class Unit:
    """The rows of one email.

    Attributes:
        key: the message key (``report``, ``group:<values>``, ``row:<values or hash>``).
        table: Arrow table of the rows (all of them, or the first ones when ``row_count`` says more).
        row_count: rows this email is about.
        extra: template context added for this email (``group`` or ``row``).
    """

    key: str
    table: pa.Table
    row_count: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Envelope:
    """Header and envelope recipients of one email."""

    to: list[str]
    cc: list[str]
    bcc: list[str]

    @functools.cached_property
    def recipients(self) -> list[str]:
        """Envelope recipients (RCPT TO): To, Cc and Bcc addresses, de-duplicated."""
        items = self.to + self.cc + self.bcc
        if not any(ADDRESS_SPECIALS.search(i) for i in items):
            return list(dict.fromkeys(items))  # bare addr-specs: nothing to parse
        return list(dict.fromkeys(a for _, a in getaddresses(items) if a))

    @functools.cached_property
    def recipients_hash(self) -> str:
        return hashlib.sha256("\n".join(sorted(self.recipients)).encode()).hexdigest()[:16]


def message_id_for(job: str, run_key: str, key: str, domain: str) -> str:
    """A Message-ID stable for one message key of one run (RFC 5322 §3.6.4).

    A message retried or re-sent after a lost reply carries the same Message-ID, so mail
    clients that de-duplicate by it (Gmail does) show it once.
    """
    digest = hashlib.sha256(f"{job}\0{run_key}\0{key}".encode()).hexdigest()[:32]
    return f"<{digest}.mailgem@{domain}>"


class Composer:
    """Builds messages for one run of a gem.

    Args:
        props: the gem's properties.
        job: the gem's name (``job`` in templates).
        params: ``params`` in templates.
        charset: the connection's charset for text parts.
        run_ts: the run's timestamp (UTC).
    """

    def __init__(self, props: EmailProperties, *, job: str, params: dict[str, Any], charset: str,
                 run_ts: dt.datetime) -> None:
        self.props = props
        self.job = job
        self.charset = charset
        self.base = base_context(job, run_ts, params)
        # One origination date per run (RFC 5322 §3.6.1), parsed once and shared by every message.
        self._date = prefolded("Date", format_datetime(run_ts))
        self._headers = run_headers(props)
        self._layouts: dict[tuple[bool, bool, bool], Layout] = {}

    def run_key(self) -> str:
        """The ledger's run key, rendered from ``ledger.run_key``."""
        template = self.props.ledger.run_key if self.props.ledger else "{{ run_date }}"
        return render("ledger.run_key", template, self.base).strip()

    # -- recipients -----------------------------------------------------------------------

    def _addresses(self, field_name: str, column: str | None, ctx: dict[str, Any], table: pa.Table) -> list[str]:
        out: list[str] = []
        for i, item in enumerate(getattr(self.props, field_name)):
            out += split_addresses(render(f"{field_name}[{i}]", item, ctx)) if is_template(item) else [item]
        if column:
            values = [v for v in table.column(column).to_pylist() if v not in (None, "")]
            out += split_addresses([str(v) for v in dict.fromkeys(values)])
        return list(dict.fromkeys(out))

    def envelope(self, unit: Unit, ctx: dict[str, Any] | None = None) -> Envelope:
        """Recipients of ``unit``: static addresses, rendered templates and column values.

        Raises:
            RecipientError: an address from data is invalid (email-validator, no DNS lookups).
        """
        p = self.props
        ctx = ctx if ctx is not None else self.context(unit)
        env = Envelope(self._addresses("to", p.to_column, ctx, unit.table),
                       self._addresses("cc", p.cc_column, ctx, unit.table),
                       self._addresses("bcc", p.bcc_column, ctx, unit.table))
        problems = [problem for item in env.to + env.cc + env.bcc if (problem := address_problem(item))]
        if problems:
            raise RecipientError("invalid recipient: " + "; ".join(problems))
        if not env.recipients:
            raise RecipientError("no recipients for this message (empty recipient column or template)")
        return env

    # -- bodies ---------------------------------------------------------------------------

    def context(self, unit: Unit) -> dict[str, Any]:
        """Template context of ``unit`` (without the rendered table)."""
        ctx = dict(self.base, row_count=unit.row_count, columns=list(unit.table.column_names))
        row = unit.extra.get("row")
        ctx["rows"] = [row] if row is not None else unit.table.slice(0, self.props.table.max_rows).to_pylist()
        ctx.update(unit.extra)
        return ctx

    def compose(self, unit: Unit, envelope: Envelope | None = None) -> tuple[EmailMessage, Envelope]:
        """Render ``unit`` into an ``EmailMessage`` (no Message-ID or From yet).

        Raises:
            RecipientError, TemplateError, MessageTooLargeError (a body over 10 MB),
            MailgemError (a rendered subject over 998 characters).
        """
        envelope = envelope or self.envelope(unit)
        subject, text, html, attachments = self._render(unit)
        message = build_message(to=envelope.to, cc=envelope.cc, subject=subject, headers=[self._date, *self._headers],
                                text=text, html=html, attachments=attachments, charset=self.charset)
        return message, envelope

    def message(self, unit: Unit, envelope: Envelope, message_id: str,
                ctx: dict[str, Any] | None = None) -> EmailMessage | LayoutMessage:
        """Render ``unit`` for sending, with ``message_id``.

        Messages without attachments are filled into the run's :class:`Layout` for their shape
        (the same bytes, a fraction of the work); others are built as an ``EmailMessage``.
        ``ctx`` is :meth:`context` of ``unit`` when the caller already has it.
        """
        subject, text, html, attachments = self._render(unit, ctx)
        if not attachments:
            shape = (bool(envelope.cc), text is not None, html is not None)
            layout = self._layouts.get(shape)
            if layout is None:
                layout = self._layouts[shape] = Layout.build(headers=[self._date, *self._headers], charset=self.charset,
                                                             has_cc=shape[0], has_text=shape[1], has_html=shape[2])
            filled = layout.fill(to=envelope.to, cc=envelope.cc, subject=subject, message_id=message_id,
                                 text=text, html=html)
            if filled is not None:
                return filled
        message = build_message(to=envelope.to, cc=envelope.cc, subject=subject, headers=[self._date, *self._headers],
                                text=text, html=html, attachments=attachments, charset=self.charset)
        message["Message-ID"] = message_id
        return message

    def _render(self, unit: Unit, ctx: dict[str, Any] | None = None) -> tuple[str, str | None, str | None, list[Attachment]]:
        """Subject, text body, HTML body and attachments of ``unit``."""
        p = self.props
        ctx = ctx if ctx is not None else self.context(unit)
        attachments = [build_csv(unit.table, spec, render(f"attachments[{i}].file_name", spec.file_name, ctx).strip())
                       for i, spec in enumerate(p.attachments)]
        shown_table = summarise(unit.table, p.table.summary) if p.table.summary else unit.table
        if p.table.columns:
            shown_table = shown_table.select(p.table.columns)
        # The "showing N of M" note counts the unit's rows (the table may hold only the first ones).
        total = None if p.table.summary else unit.row_count
        table = format_rows(shown_table, p.table.max_rows, p.formats, total=total) if p.table.enabled else None
        note = "the full data is attached" if attachments and not p.table.summary else ""

        def bodies(n: int) -> tuple[str, str | None]:
            page = dict(ctx, shown_rows=n, truncated=table is not None and n < table.total,
                        table=html_table(table, n, note) if table else "",
                        table_text=text_table(table, n) if table else "")
            # Always a text part (what clients fall back to); HTML unless the user chose text only.
            text = render("text_body", p.text_body if p.text_body is not None else DEFAULT_TEXT, page)
            html_src = p.html_body if p.html_body is not None else (DEFAULT_HTML if p.text_body is None else None)
            if html_src is None:
                return text, None
            html = render("html_body", html_src, page, html=True)
            return text, _INLINER.inline(html) if "<style" in html.lower() else html

        def html_bytes(n: int) -> bytes:
            # Measured as transmitted: every line ends in CRLF on the wire (RFC 5322 §2.1).
            return (bodies(n)[1] or "").replace("\n", "\r\n").encode()

        shown = min(p.table.max_rows, len(table.rows)) if table else 0
        if table is not None and len(html_bytes(shown)) > p.table.max_html_bytes:
            shown, _ = fit_rows(html_bytes, shown, p.table.max_html_bytes)
        text, html = bodies(shown)
        for part, body in (("text_body", text), ("html_body", html)):
            size = len(body.encode()) if body is not None else 0
            if size > MAX_BODY_BYTES:
                raise MessageTooLargeError(f"rendered {part} is {size:,} bytes, over {MAX_BODY_BYTES:,}",
                                           size_bytes=size, limit_bytes=MAX_BODY_BYTES)
        subject = one_line(render("subject", p.subject, ctx))
        if len(subject) > MAX_SUBJECT_CHARS:
            raise MailgemError(f"rendered subject is {len(subject)} characters, over {MAX_SUBJECT_CHARS} (RFC 5322 §2.1.1)")
        return subject, text, html, attachments
