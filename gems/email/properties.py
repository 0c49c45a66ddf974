"""The Email gem's properties: what its dialog edits, exportable as JSON Schema.

As YAML (inside a job file)::

    email:
      connection: reports-smtp
      to: "Ops <ops@example.com>, finance@example.com"
      subject: "Delays on {{ run_date }}: {{ row_count }} flights"
      table: {columns: [carrier, flights, avg_delay], max_rows: 50}
      attachments: [{file_name: "delays-{{ run_date }}.csv", compression: gzip}]

There is no From field: From and the envelope sender are the connection's identity.
"""

from __future__ import annotations

import decimal
import math
import re
from typing import Any, Literal

import zoneinfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mailgem.connections.addresses import CONTROL_CHARACTERS, format_mailbox, mailbox_parts, split_address_list
from mailgem.connections.yaml_types import describe_type

from .run.ledger_db import DEFAULT_LEASE_S, check_postgres_url

__all__ = [
    "EmailProperties", "TableOptions", "Summary", "Aggregate", "Formats", "CsvAttachment", "AttachmentSpec", "ChartOptions",
    "Priority", "Mode", "LedgerOptions", "split_addresses", "Column", "Highlight", "TotalFunction", "HIGHLIGHT_STYLES",
]

_MODEL = ConfigDict(frozen=True, extra="forbid")


def split_addresses(value: Any) -> list[str]:
    """Turn ``"A <a@x.com>, b@y.com"`` or a list of such strings into ``["A <a@x.com>", "b@y.com"]``.

    Each string is split at its top-level commas (a quoted display name may hold commas: see
    :func:`mailgem.connections.addresses.split_address_list`). An address without a display
    name is kept as written; one with a display name is read by the stdlib's RFC 5322 parser,
    and kept as written when the parser does not account for it, so that
    :func:`mailgem.gems.email.validate.validate` reports the text the user wrote, never a
    fragment of it. Jinja2 templates are kept whole (rendered per message, then split).

    Raises:
        ValueError: not a string or a list of strings, or a control character (a sentence
            for the user; pydantic reports it at the field).
    """
    if value is None:
        return []
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError(f"must be an address, a comma-separated text of addresses, or a list of them; not "
                         f"{describe_type(value)}")
    out: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ValueError(f"addresses must be text; item {i + 1} of the list is {describe_type(item)}")
        if CONTROL_CHARACTERS.search(item):
            raise ValueError(f"{item!r}: addresses must not contain line breaks or other control characters")
        if "{{" in item or "{%" in item:
            out.append(item.strip())  # a template: rendered per message, then split and validated
            continue
        for part in split_address_list(item):
            parts = mailbox_parts(part)
            out.append(format_mailbox(*parts) if parts is not None else part)
    return out


class Aggregate(BaseModel):
    """One summary column: ``function`` of ``column`` named ``name`` (default ``<column>_<function>``)."""

    model_config = _MODEL
    column: str
    function: Literal["count", "sum", "mean", "min", "max", "count_distinct"] = "count"
    name: str | None = None

    @property
    def output_name(self) -> str:
        return self.name or f"{self.column}_{self.function}"


class Summary(BaseModel):
    """A grouped summary shown as the body table instead of the first rows.

    ``order_by`` names output columns; prefix ``-`` for descending.
    """

    model_config = _MODEL
    group_by: list[str] = Field(min_length=1)
    aggregates: list[Aggregate] = Field(min_length=1)
    order_by: list[str] = Field(default_factory=list)


class Formats(BaseModel):
    """How cells are shown in the body table (the CSV attachment keeps raw values).

    Number formats are Python format specs (``",.2f"`` → ``1,234.50``); date formats are
    ``strftime`` patterns. NaN, None and NaT show as ``na_rep``.
    """

    model_config = _MODEL
    float_format: str = ",.2f"
    int_format: str = ","
    date_format: str = "%Y-%m-%d"
    datetime_format: str = "%Y-%m-%d %H:%M:%S"
    na_rep: str = Field(default="", max_length=100, description=(
        "How a null shows in the body's tables and in templates; a null group key shows as na_rep, or as "
        "'(null)' when na_rep is empty, so a subject or file name never loses it."))
    timezone: str | None = Field(default=None, description=(
        "IANA zone (e.g. Europe/Berlin) to show time-zone-aware timestamps in; by default each keeps its own "
        "zone. The offset is always shown (ISO 8601)."))

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
                raise ValueError(f"unknown time zone {value!r}: use an IANA name like Europe/Berlin or UTC") from None
        return value


_ALIGN = Literal["left", "right", "center"]


def _format_kind(spec: str) -> str:
    """``"date"`` for a strftime pattern (``%d %b %Y``), ``"number"`` for a Python format spec
    (``,.1f``, ``.1%``, ``,``).

    Raises:
        ValueError: neither (a sentence naming both forms).
    """
    if re.search(r"%[a-zA-Z]", spec):
        return "date"
    try:
        format(1234.5, spec)
        format(decimal.Decimal("1234.5"), spec)
    except (ValueError, TypeError):
        raise ValueError(f"format {spec!r} is neither a number format (a Python format spec such as ',.1f', '.1%' "
                         "or ',') nor a date pattern (strftime, such as '%d %b %Y')") from None
    return "number"


class Column(BaseModel):
    """How one column is presented in the body's tables, the chart's axes and (with an
    attachment's ``labels: true``, the default) the CSV and XLSX headers.

    ``format`` is a Python format spec for numbers (``",.1f"`` → ``1,234.5``; ``".1%"`` →
    ``12.5%``, the value times 100) or a ``strftime`` pattern for dates and timestamps
    (``"%d %b %Y %H:%M"``); ``unit`` is written after each number (``"min"`` → ``12.5 min``);
    ``align`` overrides the default (numbers right, everything else left).
    """

    model_config = _MODEL
    name: str = Field(min_length=1, description="The column (of the frame, or of table.summary's output).")
    label: str | None = Field(default=None, min_length=1, max_length=200, description=(
        "What readers see instead of the column name (table headers, chart axes, CSV/XLSX headers)."))
    format: str | None = Field(default=None, min_length=1, max_length=100, description=(
        "Number format (Python format spec: ',.1f', '.1%', ',') or date pattern (strftime: '%d %b %Y %H:%M')."))
    unit: str | None = Field(default=None, min_length=1, max_length=20, description="Written after each number, e.g. min, USD, kg.")
    align: _ALIGN | None = Field(default=None, description="left, right or center (default: numbers right, others left).")

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        if value is not None:
            _format_kind(value)
        return value

    @property
    def format_kind(self) -> str | None:
        """``"number"``, ``"date"`` or ``None`` (no format)."""
        return None if self.format is None else _format_kind(self.format)

    @property
    def heading(self) -> str:
        """The label, else the name."""
        return self.label or self.name


TotalFunction = Literal["sum", "mean", "count"]
# A highlight's style: its text marker (so it never rests on colour alone, WCAG 1.4.1) and its word.
HIGHLIGHT_STYLES: dict[str, tuple[str, str]] = {"warn": ("▲", "warning"), "bad": ("✖", "bad"), "good": ("✔", "good")}
_WHEN = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(.+?)\s*$")


class Highlight(BaseModel):
    """Emphasis for the cells of ``column`` whose value satisfies ``when``: a comparison with a
    number (``"> 100"``, ``"<= 0.5"``, ``"== 0"``) or with text (``'== "FAILED"'``). The cell
    gets a background, bold text and a marker (``▲`` warn, ``✖`` bad, ``✔`` good), explained
    under the table, so the emphasis does not rely on colour alone."""

    model_config = _MODEL
    column: str = Field(min_length=1)
    when: str = Field(min_length=2, max_length=200, description='A comparison: "> 100", "<= 0.5", \'== "FAILED"\'.')
    style: Literal["warn", "bad", "good"] = "warn"

    @field_validator("when")
    @classmethod
    def _comparison(cls, value: str) -> str:
        cls.parse(value)
        return value

    @staticmethod
    def parse(when: str) -> tuple[str, float | str]:
        """``(operator, operand)`` of a ``when`` text: a number, or a quoted text.

        Raises:
            ValueError: not ``<operator> <number or "text">`` (a sentence with examples).
        """
        match = _WHEN.match(when)
        if match:
            op, operand = match.groups()
            if len(operand) >= 2 and operand[0] == operand[-1] and operand[0] in "\"'":
                return op, operand[1:-1]
            try:
                number = float(operand.replace("_", ""))
            except ValueError:
                pass
            else:
                if math.isfinite(number):
                    return op, number
        raise ValueError(f"when {when!r} is not a comparison: write an operator (>, >=, <, <=, ==, !=) and a number "
                         "or a quoted text, e.g. \"> 100\" or '== \"FAILED\"'")

    @property
    def label(self) -> str:
        """The style's marker and word: ``▲ warning``."""
        marker, word = HIGHLIGHT_STYLES[self.style]
        return f"{marker} {word}"


class TableOptions(BaseModel):
    """The HTML table in the body.

    ``columns`` lists the columns to show, as names or as :class:`Column` objects (label,
    format, unit, align); ``totals`` adds a totals row computed over all of the message's rows;
    ``highlight`` emphasises values past a threshold.

    ``max_html_bytes`` is the budget for the whole HTML body: Gmail clips messages over about
    102 KB, so rows are cut to fit with a "showing N of M rows" note.
    """

    model_config = _MODEL
    enabled: bool = True
    columns: list[str | Column] | None = Field(default=None, description=(
        "Columns to show, in order: names, or {name, label, format, unit, align}."))
    max_rows: int = Field(default=100, ge=1, le=10_000)
    max_html_bytes: int = Field(default=90_000, ge=2_000, le=10 * 1024 * 1024)
    max_cell_chars: int = Field(default=200, ge=10, le=100_000, description=(
        "Longer cells are cut with '…' in the body's tables (the attachment keeps the whole value)."))
    summary: Summary | None = None
    totals: dict[str, TotalFunction] = Field(default_factory=dict, description=(
        "A totals row under the table: {column: sum | mean | count}, over all of the message's rows."))
    highlight: list[Highlight] = Field(default_factory=list, description=(
        'Emphasis for values past a threshold: [{column, when: "> 100", style: warn | bad | good}].'))

    @property
    def column_names(self) -> list[str] | None:
        """The names of ``columns`` (``None``: every column)."""
        return None if self.columns is None else [c if isinstance(c, str) else c.name for c in self.columns]

    @property
    def presentation(self) -> dict[str, Column]:
        """``{name: Column}`` for the columns given as objects (labels, formats, units, alignment)."""
        return {c.name: c for c in self.columns or [] if isinstance(c, Column)}

    def labels(self) -> dict[str, str]:
        """``{name: label}`` of the columns that have a label."""
        return {name: c.label for name, c in self.presentation.items() if c.label}

    @model_validator(mode="after")
    def _unique(self) -> TableOptions:
        names = self.column_names or []
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"table.columns lists {', '.join(map(repr, twice))} more than once: list each column once")
        if self.column_names is not None:
            for option, used in (("totals", list(self.totals)), ("highlight", [h.column for h in self.highlight])):
                missing = [n for n in dict.fromkeys(used) if n not in names]
                if missing:
                    raise ValueError(f"table.{option} names {', '.join(map(repr, missing))}, not one of table.columns "
                                     f"({', '.join(names)}): add it to table.columns, or use a column the table shows")
        return self


class ChartOptions(BaseModel):
    """An inline chart of the frame (or of ``table.summary`` when set), in the HTML body as a PNG
    with a ``cid:`` reference (no remote images), described in words in the text part.

    ``y`` is one column or several (one series each); ``top_n`` keeps the N rows with the
    largest first ``y`` (bar charts: largest first).
    """

    model_config = _MODEL
    kind: Literal["bar", "line"] = "bar"
    x: str
    y: str | list[str]
    title: str | None = None
    top_n: int | None = Field(default=None, ge=1, le=1_000)

    @property
    def y_columns(self) -> list[str]:
        return [self.y] if isinstance(self.y, str) else list(self.y)


AttachmentFormat = Literal["csv", "xlsx", "parquet"]
_SUFFIXES = {"csv": (".csv", ".csv.gz", ".csv.zip", ".gz", ".zip"), "xlsx": (".xlsx",), "parquet": (".parquet",)}


class AttachmentSpec(BaseModel):
    """An attachment holding the frame's rows (all of them, raw values): ``csv`` (RFC 4180),
    ``xlsx`` (typed cells, for Excel) or ``parquet`` (for data consumers)."""

    model_config = _MODEL
    file_name: str = Field(default="data-{{ run_date }}.csv", description="Jinja2 template for the file name.")
    format: AttachmentFormat = Field(default="csv", description="csv, xlsx (Excel workbook) or parquet.")
    columns: list[str] | None = None
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="CSV only.")
    header: bool = True
    labels: bool = Field(default=True, description=(
        "CSV and XLSX: the header row uses the labels of table.columns (where a column has one) instead of "
        "column names; set false for files read by programs."))
    compression: Literal["none", "gzip", "zip"] = Field(default="none", description="CSV only (xlsx and parquet are compressed).")
    compression_level: int = Field(default=6, ge=1, le=9, description="zlib level: 1 fastest, 9 smallest.")
    csv_formula_escape: bool = Field(default=True, description=(
        "Prefix text cells starting with = + - @ tab or CR with ' so spreadsheets show them instead of running "
        "them as formulas (OWASP CSV Injection); numbers are never changed. XLSX always writes text as text."))
    bom: bool = Field(default=False, description="CSV: start the file with a UTF-8 byte order mark (Excel on Windows needs it).")
    long_cells: Literal["cut", "error"] = Field(default="cut", description=(
        "XLSX only: a text cell longer than Excel's 32,767 characters is cut to fit (cut: logged, and named in the "
        "delivery report's notes column) or fails its message, which is then not sent (error)."))

    @model_validator(mode="after")
    def _format_matches(self) -> AttachmentSpec:
        if self.format != "csv" and self.compression != "none":
            raise ValueError(f"compression is for CSV; a {self.format} file is compressed already: remove compression")
        name = self.file_name.lower()
        for fmt, suffixes in _SUFFIXES.items():
            if fmt != self.format and name.endswith(suffixes[0]):
                raise ValueError(f"file_name {self.file_name!r} ends in {suffixes[0]} but format is {self.format}: set "
                                 f"format: {fmt}, or name the file {self.file_name[: -len(suffixes[0])]}"
                                 f"{_SUFFIXES[self.format][0]}")
        return self


CsvAttachment = AttachmentSpec  # the name before XLSX and Parquet


Priority = Literal["low", "normal", "high"]
Mode = Literal["report", "per_group", "per_row"]


class LedgerOptions(BaseModel):
    """The send ledger that makes re-runs safe (see :mod:`mailgem.gems.email.run.ledger`).

    A message whose key was already accepted by the server in a run with the same ``run_key``
    is not sent again.

    Where it lives: ``path`` (a SQLite file, for the processes of one machine) or ``url``
    (``postgresql://user@host[:port]/database``, for every executor of a cluster) with the
    password in the fabric's secret store, named by ``secret``; never in the job file.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)  # a URL may hold a password
    path: str | None = Field(default=None, description="SQLite file of the ledger (created if missing); one machine only.")
    url: str | None = Field(default=None, description="PostgreSQL database of the ledger: postgresql://user@host[:port]/database "
                                              "(no password here: see secret). Tables are created if missing.")
    secret: str | None = Field(default=None, description="Name of the fabric secret holding the PostgreSQL password.")
    run_key: str = Field(default="{{ run_date }}", description="Jinja2 template naming one run: a re-run with the same key resumes it.")
    lease_s: float = Field(default=DEFAULT_LEASE_S, ge=1, le=3600,
                           description="Seconds a run's claim on the messages it is sending outlives it when it is killed; "
                                       "a re-run waits at most three times this for them. Renewed every lease_s/3 s.")

    @model_validator(mode="after")
    def _one_place(self) -> LedgerOptions:
        if (self.path is None) == (self.url is None):
            raise ValueError("give ledger.path (a SQLite file, one machine) or ledger.url (postgresql://user@host/db, "
                             "a cluster), exactly one")
        if self.url is not None:
            check_postgres_url(self.url)
        elif self.secret is not None:
            raise ValueError("ledger.secret is the PostgreSQL password's secret: it goes with ledger.url, not path")
        return self


class EmailProperties(BaseModel):
    """Everything the Email gem needs to turn a DataFrame into an email.

    Templates (subject, text_body, html_body, attachment file names) are Jinja2; HTML is
    autoescaped. They see: ``row_count``, ``columns``, ``rows`` (first rows, list of dicts),
    ``table`` (the HTML table), ``table_text``, ``shown_rows``, ``truncated``, ``run_ts``
    (UTC datetime), ``run_date`` (``YYYY-MM-DD``), ``job`` and ``params``.
    """

    model_config = _MODEL

    connection: str = Field(min_length=1, description="Name of the SMTP connection in the fabric.")
    to: list[str] = Field(default_factory=list, description="Recipients; a list or a comma-separated string; 'Name <addr>' accepted.")
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list, description="Envelope-only recipients; never in the headers.")
    reply_to: list[str] = Field(default_factory=list)
    subject: str = Field(min_length=1, description="Jinja2 template; line breaks from data are folded to spaces.")
    text_body: str | None = Field(default=None, description="Jinja2 template of the text/plain part.")
    html_body: str | None = Field(default=None, description="Jinja2 template (autoescaped) of the text/html part.")
    priority: Priority = "normal"
    headers: dict[str, str] = Field(default_factory=dict, description="Custom headers (at most 50; identity and structural headers are reserved).")
    table: TableOptions = Field(default_factory=TableOptions)
    formats: Formats = Field(default_factory=Formats)
    attachments: list[AttachmentSpec] = Field(default_factory=list)
    chart: ChartOptions | None = Field(default=None, description="An inline chart in the HTML body ({{ chart }}).")
    on_empty: Literal["skip", "send"] = Field(default="skip", description="What to do when the frame has no rows.")
    on_error: Literal["stop", "continue"] = Field(default="stop", description="stop: raise; continue: record the failure in the delivery report.")

    mode: Mode = Field(default="report", description="report: one email for the frame; per_group: one per group of group_by; per_row: one per row.")
    group_by: list[str] = Field(default_factory=list, description="Columns whose values make a group (per_group).")
    key_columns: list[str] = Field(default_factory=list, description="Columns identifying a row (per_row message keys); default: all values.")
    to_column: str | None = Field(default=None, description="Column holding To addresses (comma-separated allowed); added to `to`.")
    cc_column: str | None = None
    bcc_column: str | None = None
    max_messages: int | None = Field(default=None, ge=1, description="Refuse the run, before sending anything, if it would send more messages.")
    max_message_bytes: int | None = Field(default=None, ge=20_000, description=(
        "Largest message to send, in bytes as transmitted (e.g. 10,000,000 for a mailbox that takes 10 MB); "
        "the server's SIZE applies too."))
    attachments_over_limit: Literal["error", "compress", "split"] = Field(default="error", description=(
        "When attachments make a message too large: error (that message fails), compress (CSV becomes gzip), "
        "or split (the rows go out in numbered parts, each under the limit)."))
    ledger: LedgerOptions | None = Field(default=None, description="Send ledger for safe re-runs; off when absent.")
    distributed: bool = Field(default=True, description="Spark input, per_group/per_row: build and send on the executors.")

    @field_validator("to", "cc", "bcc", "reply_to", mode="before")
    @classmethod
    def _split(cls, value: Any) -> list[str]:
        return split_addresses(value)
