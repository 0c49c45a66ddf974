"""``validate()``: diagnostics before any run (addresses, templates, headers, columns, limits)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from mailgem.connections.addresses import CONTROL_CHARACTERS, AddressError, parse_mailbox
from mailgem.connections.headers import prefolded

from .properties import ChartOptions, EmailProperties, TableOptions
from .run.in1_check import in1_problems
from .content.templates import check_templates, is_template, sample_value

__all__ = [
    "Diagnostic", "validate", "RESERVED_HEADERS", "MAX_CUSTOM_HEADERS", "MAX_SUBJECT_CHARS",
    "MAX_BODY_BYTES", "check_header", "is_template", "address_problem", "invalid_params",
]

# Set by the connection (identity) or by the MIME builder (structure); never by users. Errors-To,
# Disposition-Notification-To (RFC 8098) and Return-Receipt-To send replies and bounces elsewhere;
# every Resent-* field (RFC 5322 §3.6.6) restates the identity, so the whole family is reserved.
RESERVED_HEADERS = frozenset(h.lower() for h in (
    "From", "Sender", "To", "Cc", "Bcc", "Reply-To", "Return-Path", "Message-ID", "Date",
    "Subject", "Content-Type", "Content-Transfer-Encoding", "MIME-Version", "DKIM-Signature",
    "Received", "X-Priority", "Importance", "Errors-To", "Disposition-Notification-To", "Return-Receipt-To",
    "Auto-Submitted", "X-Auto-Response-Suppress",
))
RESERVED_PREFIXES = ("resent-",)
MAX_CUSTOM_HEADERS = 50
MAX_SUBJECT_CHARS = 998  # RFC 5322 §2.1.1: a line is at most 998 characters
MAX_BODY_BYTES = 10 * 1024 * 1024
# RFC 5322 §3.6.8: field-name = 1*ftext, printable US-ASCII except ":".
_FTEXT = frozenset(chr(c) for c in range(33, 127)) - {":"}


@dataclass(frozen=True)
class Diagnostic:
    """One finding: ``path`` in the properties (e.g. ``to[1]``), severity, and what to fix."""

    path: str
    severity: Literal["error", "warning"]
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}"


def check_header(name: str, value: str) -> str | None:
    """Return why a custom header is not allowed, or ``None`` when it is."""
    if not name or any(ch not in _FTEXT for ch in name):
        return f"header name {name!r} must be printable ASCII without spaces or ':' (RFC 5322 §3.6.8)"
    if name.lower() in RESERVED_HEADERS or name.lower().startswith(RESERVED_PREFIXES):
        return f"header {name!r} is reserved: mailgem or the connection sets it"
    if "\r" in value or "\n" in value or "\x00" in value:
        return f"header {name!r} contains a line break or NUL (header injection); remove it"
    if CONTROL_CHARACTERS.search(value):
        return f"header {name!r} contains a control character; remove it (RFC 5322 §3.2.2)"
    if len(name) + 2 + len(value) > MAX_SUBJECT_CHARS:
        return f"header {name!r} is longer than {MAX_SUBJECT_CHARS} characters"
    try:
        value.encode("utf-8")
        prefolded(name, value)  # what the stdlib will do with it in every message
    except (ValueError, TypeError) as exc:
        return f"header {name!r} cannot be encoded: {exc}"
    return None


def address_problem(item: str, special_domains: tuple[str, ...] = ()) -> str | None:
    """Why ``item`` (``addr`` or ``Name <addr>``) is not a valid address, or ``None``
    (``special_domains``: the connection's ``allowed_special_domains``)."""
    try:
        parse_mailbox(item, special_domains)
    except AddressError as exc:
        return str(exc)
    return None


def invalid_params(params: Mapping[str, Any] | list[Any] | None, prefix: str = "params") -> list[Diagnostic]:
    """An error for each ``params`` text that is not valid Unicode (a lone surrogate: e.g. bytes
    of another encoding on a command line, ``--param x=...``), which no message can carry; found
    in nested lists and mappings too, named by its path (``params.region``)."""
    out: list[Diagnostic] = []
    items = params.items() if isinstance(params, Mapping) else enumerate(params) if isinstance(params, list) else ()
    for key, value in items:
        path = f"{prefix}.{key}" if isinstance(params, Mapping) else f"{prefix}[{key}]"
        if isinstance(value, Mapping | list):
            out += invalid_params(value, path)
        elif isinstance(value, str) and any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):
            out.append(_error(path, f"{value!r} is not valid Unicode text (a lone surrogate, e.g. bytes of another "
                                    "encoding): give it as UTF-8 text"))
    return out


def validate(properties: EmailProperties | dict[str, Any], columns: Sequence[str] | Mapping[str, str | None] | None = None,
             *, job: str = "email", params: Mapping[str, Any] | None = None,
             special_domains: tuple[str, ...] = (), in1_columns: Sequence[str] | Mapping[str, str | None] | None = None,
             has_in1: bool | None = None) -> list[Diagnostic]:
    """Check the gem's properties before a run; return every problem found (empty when fine).

    Templates are compiled, checked for names their context lacks and rendered against a
    sample context (see :mod:`mailgem.gems.email.content.templates`).

    Args:
        properties: the properties, or a dict to validate into them.
        columns: the input frame's column names (or ``{name: type name}``), to check column
            references and templates' ``row.x``; ``None`` skips that.
        job: the job's name (``job`` in templates).
        params: the job's params (``params`` in templates); ``None`` when unknown.
        special_domains: the connection's ``allowed_special_domains`` (internal relays' domains).
        in1_columns: the second input's column names (or ``{name: type name}``), to check
            ``slice_by`` and the parts that say ``from: in1``; ``None`` skips that.
        has_in1: whether a second input is given (``False``: what needs one is an error;
            ``None``: unknown).

    Returns:
        diagnostics with severity ``error`` (the run would fail) or ``warning``.
    """
    if isinstance(properties, dict):
        try:
            properties = EmailProperties.model_validate(properties)
        except ValidationError as exc:
            return [Diagnostic(".".join(str(p) for p in e["loc"]) or "(properties)", "error",
                               e["msg"].removeprefix("Value error, "))
                    for e in exc.errors(include_url=False, include_input=False)]
    props = properties
    types: Mapping[str, str | None] | None = (
        None if columns is None else columns if isinstance(columns, Mapping) else dict.fromkeys(columns))
    return [*_recipients(props, special_domains), *_mode(props), *_headers(props),
            *(Diagnostic(found.path, found.severity, found.message)
              for found in check_templates(props, job=job, params=params, columns=types)),
            *_content(props), *_sections(props), *_columns(props, None if columns is None else list(columns),
                                        None if in1_columns is None else list(in1_columns)),
            *(_error(path, message) for path, message in in1_problems(props, None if columns is None else list(columns),
                                                                      None if in1_columns is None else list(in1_columns),
                                                                      has_in1)),
            *([] if types is None or props.table.from_ == "in1" else _presentation_types(props, types))]


def _error(path: str, message: str) -> Diagnostic:
    return Diagnostic(path, "error", message)


def _recipients(props: EmailProperties, special_domains: tuple[str, ...]) -> Iterator[Diagnostic]:
    """Fixed addresses (templates are checked per message, when rendered)."""
    if not (props.to or props.cc or props.bcc or props.to_column or props.cc_column or props.bcc_column):
        yield _error("to", "no recipients: set to, cc or bcc (addresses or templates), or to_column")
    for field in ("to", "cc", "bcc", "reply_to"):
        for i, item in enumerate(getattr(props, field)):
            if is_template(item):
                continue  # rendered per message, then validated (a bad one fails that message only)
            problem = address_problem(item, special_domains)
            if problem:
                yield _error(f"{field}[{i}]", problem)
            elif field == "reply_to" and parse_mailbox(item, special_domains).smtputf8:
                yield _error(f"{field}[{i}]", f"{item!r} has a non-ASCII local part; Reply-To must be an ASCII address "
                                              "(it is in every message, and not every server offers SMTPUTF8)")


def _mode(props: EmailProperties) -> Iterator[Diagnostic]:
    if props.mode == "per_group" and not props.group_by:
        yield _error("group_by", "mode per_group needs group_by: the columns whose values make a group")
    if props.mode != "per_group" and props.group_by:
        yield Diagnostic("group_by", "warning", f"group_by is only used by mode per_group, not {props.mode}")
    if props.mode == "report" and (props.to_column or props.cc_column or props.bcc_column):
        yield Diagnostic("to_column", "warning", "in mode report, recipients from columns are the distinct values of the whole frame")


def _headers(props: EmailProperties) -> Iterator[Diagnostic]:
    """Custom headers, and Reply-To, which is the same in every message."""
    if len(props.headers) > MAX_CUSTOM_HEADERS:
        yield _error("headers", f"{len(props.headers)} custom headers; at most {MAX_CUSTOM_HEADERS} are allowed")
    for name, value in props.headers.items():
        problem = check_header(name, value)
        if problem:
            yield _error(f"headers.{name}", problem)
    for i, item in enumerate(props.reply_to):
        if is_template(item):
            yield _error(f"reply_to[{i}]", "reply_to is the same in every message and cannot be a template; give an address")


def _content(props: EmailProperties) -> Iterator[Diagnostic]:
    """Subject and body sizes, the chart's place, and a message with nothing in it."""
    if len(props.subject) > MAX_SUBJECT_CHARS:
        yield _error("subject", f"subject is {len(props.subject)} characters; at most {MAX_SUBJECT_CHARS} (RFC 5322 §2.1.1)")
    for path in ("text_body", "html_body"):
        body = getattr(props, path)
        if body is not None and len(body.encode()) > MAX_BODY_BYTES:
            yield _error(path, f"template is over {MAX_BODY_BYTES:,} bytes")
    if props.chart is not None:
        if props.html_body is not None and "chart" not in props.html_body:
            yield Diagnostic("html_body", "warning", "a chart is configured but html_body never shows {{ chart }}")
        if props.html_body is None and props.text_body is not None:
            yield _error("chart", "a chart needs an HTML body: remove text_body or add html_body with {{ chart }}")
        yield from _chart_on_summary("", props.table, props.chart)
    if any(a.protect for a in props.attachments) and props.table.enabled and props.table.summary is None:
        yield Diagnostic("table.enabled", "warning", "an attachment is protected, but the body's table shows its rows in "
                                                     "clear: set table.enabled: false, or show a table.summary")
    if props.text_body is None and props.html_body is None and not props.table.enabled and not props.attachments:
        yield Diagnostic("table.enabled", "warning", "no body, no table and no attachment: the email will say only the row count")


def _chart_on_summary(prefix: str, table: TableOptions | None, chart: ChartOptions) -> Iterator[Diagnostic]:
    """With a summary, the chart (``{prefix}chart``) draws it: its x and y are summary columns."""
    if table is not None and table.summary is not None:
        outputs = set(table.summary.group_by) | {a.output_name for a in table.summary.aggregates}
        for name in (chart.x, *chart.y_columns):
            if name not in outputs:
                yield _error(f"{prefix}chart", f"{name!r} is not a summary column ({', '.join(sorted(outputs))}); with "
                                               f"{prefix}table.summary the chart draws the summary")


def _sections(props: EmailProperties) -> Iterator[Diagnostic]:
    """Where the sections show, and what the default bodies leave out when there are sections."""
    if not props.sections:
        return
    for i, section in enumerate(props.sections):
        if section.chart is not None:
            if props.html_body is None and props.text_body is not None:
                yield _error(f"sections[{i}].chart", "a chart needs an HTML body: remove text_body or add html_body "
                                                     "with {{ sections }}")
            yield from _chart_on_summary(f"sections[{i}].", section.table, section.chart)
    if props.html_body is not None and "sections" not in props.html_body:
        yield Diagnostic("html_body", "warning", "sections are configured but html_body never shows {{ sections }}")
    if props.text_body is not None and "sections_text" not in props.text_body:
        yield Diagnostic("text_body", "warning", "sections are configured but text_body never shows {{ sections_text }}")
    if props.html_body is None and props.text_body is None:
        shown = [name for name, given in (("chart", props.chart is not None),
                                          ("table", _table_configured(props.table))) if given]
        if shown:
            yield Diagnostic(shown[0], "warning", f"with sections, the default bodies show the sections only, not the "
                                                  f"top-level {' and '.join(shown)}: move it into a section, or write "
                                                  "html_body with {{ " + shown[0] + " }} and {{ sections }}")


def _table_configured(table: TableOptions) -> bool:
    """Whether the top-level table says what to show (more than the body's budget and cell length)."""
    return bool(table.model_fields_set - {"max_html_bytes", "max_cell_chars", "enabled"}) and table.enabled


def _kind(type_name: str | None) -> str | None:
    """``number``, ``time`` or ``None`` (anything else, or unknown) of an Arrow or Spark type name."""
    value = sample_value(type_name) if type_name else None
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    return "time" if isinstance(value, dt.date) else "number"


def _presentation_types(props: EmailProperties, types: Mapping[str, str | None]) -> Iterator[Diagnostic]:
    """A column's format fits its type, and a sum or mean is of numbers (frame columns whose
    types are known; a summary's output types are not): the top-level table's and each
    ``from: in0`` section's."""
    yield from _table_types("table", props.table, types)
    for i, section in enumerate(props.sections):
        if section.table is not None and section.from_ == "in0":
            yield from _table_types(f"sections[{i}].table", section.table, types)


def _table_types(path: str, table: TableOptions, types: Mapping[str, str | None]) -> Iterator[Diagnostic]:
    """:func:`_presentation_types` of one table (at ``path``)."""
    if table.summary is not None:
        return
    for name, column in table.presentation.items():
        kind, want = _kind(types.get(name)), column.format_kind
        if kind is not None and want is not None and (want == "date") != (kind == "time"):
            what = "a date pattern" if want == "date" else "a number format"
            fix = "a number format like ',.1f'" if kind == "number" else "a date pattern like '%d %b %Y'"
            yield _error(f"{path}.columns[{name}].format", f"{column.format!r} is {what} but {name!r} holds "
                                                            f"{types[name]}: use {fix}")
        if kind is None and types.get(name) and (column.format or column.unit):
            yield Diagnostic(f"{path}.columns[{name}]", "warning", f"format and unit apply to numbers and dates; {name!r} "
                                                                   f"holds {types[name]}, so they change nothing")
    for name, function in table.totals.items():
        if function != "count" and types.get(name) and _kind(types[name]) != "number":
            yield _error(f"{path}.totals.{name}", f"{function} needs numbers, and {name!r} holds {types[name]}: use count")


def _view_refs(prefix: str, table: TableOptions | None, chart: ChartOptions | None,
               refs: list[tuple[str, list[str]]]) -> Iterator[Diagnostic]:
    """The columns a table (``{prefix}table``) and its chart name: those that must be the
    frame's are added to ``refs``; those that must be its summary's are checked here."""
    summary = table.summary if table is not None else None
    if table is not None:
        names = table.column_names or []
        shown = [*table.totals, *(h.column for h in table.highlight)]
        if summary is None:
            refs += [(f"{prefix}table.columns", names), (f"{prefix}table.totals", list(table.totals)),
                     (f"{prefix}table.highlight", [h.column for h in table.highlight])]
        else:
            refs += [(f"{prefix}table.summary.group_by", summary.group_by),
                     (f"{prefix}table.summary.aggregates", [a.column for a in summary.aggregates])]
            outputs = set(summary.group_by) | {a.output_name for a in summary.aggregates}
            for i, key in enumerate(summary.order_by):
                if key.lstrip("-") not in outputs:
                    yield _error(f"{prefix}table.summary.order_by[{i}]",
                                 f"{key.lstrip('-')!r} is not a summary column ({', '.join(sorted(outputs))})")
            refs.append((f"{prefix}table.columns", [c for c in names if c not in outputs]))
            for name in dict.fromkeys(shown):
                if name not in outputs:
                    yield _error(f"{prefix}table.totals" if name in table.totals else f"{prefix}table.highlight",
                                 f"{name!r} is not a summary column ({', '.join(sorted(outputs))}); with "
                                 f"{prefix}table.summary the table shows the summary")
    if chart is not None and summary is None:
        refs.append((f"{prefix}chart", [chart.x, *chart.y_columns]))


def _columns(props: EmailProperties, columns: list[str] | None, in1_columns: list[str] | None) -> Iterator[Diagnostic]:
    """Every column the properties name is one its input has (a summary's columns where it
    applies): ``in1``'s for the table, chart, sections and attachments that say ``from: in1``,
    ``in0``'s for the rest."""
    if columns is None and in1_columns is None:
        return
    sourced: list[tuple[str, list[str], str]] = []

    def add(source: str, refs: list[tuple[str, list[str]]]) -> None:
        sourced.extend((path, names, source) for path, names in refs)

    refs: list[tuple[str, list[str]]] = []
    yield from _view_refs("", props.table, props.chart, refs)
    add(props.table.from_, refs)  # the table and the chart show the table's input
    for i, section in enumerate(props.sections):
        refs = []
        yield from _view_refs(f"sections[{i}].", section.table, section.chart, refs)
        add(section.from_, refs)
    for i, a in enumerate(props.attachments):
        refs = [(f"attachments[{i}].columns", a.column_names or [])]
        for j, sheet in enumerate(a.sheets or []):
            used = sheet.column_names or [] if sheet.summary is None else [
                *sheet.summary.group_by, *(agg.column for agg in sheet.summary.aggregates)]
            refs.append((f"attachments[{i}].sheets[{j}] ({sheet.name})", used))
        add(a.from_, refs)
    add("in0", [("group_by", props.group_by), ("key_columns", props.key_columns)])
    add("in0", [(f, [getattr(props, f)]) for f in ("to_column", "cc_column", "bcc_column") if getattr(props, f)])
    frames = {"in0": columns, "in1": in1_columns}
    for path, names, source in sourced:
        known = frames[source]
        if known is None:
            continue
        for name in names:
            if name not in known:
                frame = "the frame" if source == "in0" and in1_columns is None else f"{source}"
                yield _error(path, f"unknown column {name!r}; {frame} has: {', '.join(known)}")
