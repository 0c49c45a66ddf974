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

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mailgem.connections.addresses import CONTROL_CHARACTERS, format_mailbox, mailbox_parts, split_address_list
from mailgem.connections.yaml_types import describe_type

from .file_options import FileSpec, Protection
from .presentation import (HIGHLIGHT_STYLES, Aggregate, ChartOptions, Column, ColumnChoice, Formats, Highlight, InputName,
                           Summary, TableOptions, TotalFunction)
from .run.ledger_db import DEFAULT_LEASE_S, check_postgres_url
from .sections import MAX_SECTIONS, Section
from .sheets import Sheet, sheets_problem

__all__ = [
    "EmailProperties", "TableOptions", "Summary", "Aggregate", "Formats", "CsvAttachment", "AttachmentSpec", "ChartOptions",
    "Priority", "Mode", "LedgerOptions", "split_addresses", "Column", "Highlight", "TotalFunction", "HIGHLIGHT_STYLES",
    "FileSpec", "Protection", "Section", "Sheet",
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


AttachmentFormat = Literal["csv", "xlsx", "parquet"]
_SUFFIXES = {"csv": (".csv", ".csv.gz", ".csv.zip", ".gz", ".zip"), "xlsx": (".xlsx",), "parquet": (".parquet",)}


class AttachmentSpec(BaseModel, ColumnChoice):
    """An attachment holding the frame's rows (all of them, raw values): ``csv`` (RFC 4180),
    ``xlsx`` (typed cells, for Excel) or ``parquet`` (for data consumers)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    from_: InputName = Field(default="in0", alias="from", description=(
        "Which input's rows the file holds: in0 (the message's rows) or in1 (the second input's rows this message "
        "carries: all of in1, or its slice by slice_by)."))
    file_name: str = Field(default="data-{{ run_date }}.csv", description="Jinja2 template for the file name.")
    format: AttachmentFormat = Field(default="csv", description="csv, xlsx (Excel workbook) or parquet.")
    columns: list[str | Column] | None = Field(default=None, description=(
        "Columns to write, in order (default: all): names, or {name, label, format, unit} like table.columns, "
        "whose presentation is used here over table.columns'."))
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
    sheets: list[Sheet] | None = Field(default=None, min_length=1, description=(
        "XLSX only: the workbook's worksheets, in order, each a summary or detail rows: [{name, summary | columns}] "
        "(default: one sheet, data, of the rows)."))
    protect: Protection | None = Field(default=None, description=(
        "Send the file as <file_name>.zip, AES-256 encrypted with a fabric secret's password: {password: {secret: NAME}}."))

    @model_validator(mode="after")
    def _format_matches(self) -> AttachmentSpec:
        if self.protect is not None and self.compression != "none":
            raise ValueError(f"compression {self.compression} and protect: a protected file is zipped already (an "
                             "encrypted ZIP): remove compression")
        if self.sheets is not None:
            if self.format != "xlsx":
                raise ValueError(f"sheets are worksheets of an XLSX workbook; this attachment's format is {self.format}: "
                                 "set format: xlsx (and a file_name ending in .xlsx), or remove sheets")
            problem = sheets_problem([sheet.name for sheet in self.sheets])
            if problem:
                raise ValueError(problem)
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
    (UTC datetime), ``run_date`` (``YYYY-MM-DD``), ``job``, ``params`` and ``aggregates``
    (``{column: {count, nulls, sum, mean, min, max}}`` over the message's rows); with ``sections``, the bodies also see ``sections`` (HTML) and
    ``sections_text``. ``send_if`` and ``skip_if`` are conditions (see
    :mod:`mailgem.gems.email.content.conditions`).
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
    files: list[FileSpec] = Field(default_factory=list, description=(
        "Existing files to attach as they are (a PDF exported upstream): [{path, file_name, protect}]; path may be a "
        "template, relative to the job file's folder."))
    chart: ChartOptions | None = Field(default=None, description="An inline chart in the HTML body ({{ chart }}).")
    sections: list[Section] = Field(default_factory=list, max_length=MAX_SECTIONS, description=(
        "Several views in one message: [{title, text, table, chart, from}], shown in order by the default bodies "
        "(instead of the top-level table and chart) or where html_body has {{ sections }} and text_body {{ sections_text }}."))
    on_empty: Literal["skip", "send"] = Field(default="skip", description="What to do when the frame has no rows.")
    on_error: Literal["stop", "continue"] = Field(default="stop", description="stop: raise; continue: record the failure in the delivery report.")
    send_if: str | None = Field(default=None, min_length=1, description=(
        "Jinja2 condition evaluated per message before it is built, e.g. \"{{ row_count > 0 and rows[0].error_rate > "
        "0.05 }}\"; it sees the message's template context and aggregates. False: the message is not sent (status "
        "skipped_by_rule). One {{ expression }} uses its truth; other text must render true/yes/1 or false/no/0."))
    skip_if: str | None = Field(default=None, min_length=1, description=(
        "Jinja2 condition evaluated once, after the frame is read and before any message is built, over the whole "
        "frame (row_count, columns, rows, aggregates, params, run_date, job). True: nothing is sent; the report has "
        "one row, message_key (run), status skipped_by_rule."))

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
    slice_by: dict[str, str] | None = Field(default=None, description=(
        "With a second input (in1): {in0_column: in1_column, ...}. Each message carries only the in1 rows whose "
        "in1 columns equal the in0 columns of one of its rows (an inner-join match: a null matches nothing). "
        "Without it, every message carries all of in1."))

    @field_validator("slice_by")
    @classmethod
    def _slice_pairs(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and not value:
            raise ValueError("is empty: map in0 columns to in1 columns, e.g. {carrier: carrier}, or remove slice_by")
        return value

    @field_validator("to", "cc", "bcc", "reply_to", mode="before")
    @classmethod
    def _split(cls, value: Any) -> list[str]:
        return split_addresses(value)
