"""XLSX attachments: a workbook Excel opens as a typed table (xlsxwriter, constant-memory mode).

Numbers are numbers, booleans booleans, dates and timestamps Excel dates with a date format;
text is always written as text — never as a formula, a URL or a number — so data cannot run in
the spreadsheet. Nested values are compact JSON text. A bold header row is frozen with an
autofilter, and column widths follow the data (the header and the first 1,000 rows).

A text cell holds at most :data:`EXCEL_MAX_CELL_CHARS` characters, counted as Excel counts them:
UTF-16 code units (a character outside the Basic Multilingual Plane, such as an emoji, counts
two). A longer one is cut to fit, without splitting a character, and the columns cut are
returned (``long_cells: cut``, the default), or the workbook is refused (``long_cells: error``).
The cut is made here rather than left to xlsxwriter (whose ``write_string`` cuts silently and
only returns -2), so what is written and what is reported agree whichever xlsxwriter is installed.

Numbers show as in the body: each column's number format is its ``table.columns`` format and unit,
else ``formats.float_format`` (floats, decimals) or ``formats.int_format`` (integers), translated
to an Excel number format (:mod:`.xlsx_numbers`), so a cell stays a number. A number Excel cannot
hold (an infinity, beyond its range, more than 15 significant digits) is written as text and
counted by column for the delivery report's notes; NaN is an empty cell.

Excel has no time zones: a time-zone-aware timestamp is written as its wall time in the column's
zone (``formats.timezone`` when set, applied by the caller), and the header names the zone once:
``scheduled (Europe/Berlin)``. Dates and timestamps use the column's date pattern, else
``formats.date_format`` / ``formats.datetime_format``, translated; an untranslatable pattern
falls back to ``yyyy-mm-dd`` / ``yyyy-mm-dd hh:mm:ss``. Milliseconds are shown (``ss.000``) only
in columns that have fractions of a second.
"""

from __future__ import annotations

import datetime as dt
import decimal
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..properties import AttachmentSpec, Column, Formats
from .cells import column_kind, has_fractions, is_nested, json_text
from .xlsx_numbers import date_format, excel_number, number_format, with_fractions

__all__ = ["write_xlsx", "write_workbook", "XlsxFile", "XLSX_MIME", "MAX_ROWS", "MAX_COLUMNS", "EXCEL_MAX_CELL_CHARS", "utf16_units"]

XLSX_MIME = ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet")
# Excel's worksheet limits (Microsoft, "Excel specifications and limits").
MAX_ROWS = 1_048_576
MAX_COLUMNS = 16_384
# Characters a cell can contain (same source: "Total number of characters that a cell can contain:
# 32,767 characters"), in UTF-16 code units, as Excel stores text and xlsxwriter checks it.
EXCEL_MAX_CELL_CHARS = 32_767
_MAX_WIDTH = 60  # characters; wider columns are left to the user
_WIDTH_SAMPLE_ROWS = 1_000


def _cell_text(value: Any) -> str:
    if isinstance(value, list | dict | tuple):
        return json_text(value)
    return str(value)


def _widths(table: pa.Table, headers: list[str]) -> list[float]:
    sample = table.slice(0, _WIDTH_SAMPLE_ROWS)
    widths: list[float] = []
    for header, column in zip(headers, sample.columns, strict=True):
        longest = max([len(header) + 2] + [len(_cell_text(v)) for v in column.to_pylist() if v is not None])
        widths.append(min(_MAX_WIDTH, max(8, longest + 1)))
    return widths


def utf16_units(text: str) -> int:
    """Length of ``text`` as Excel counts it: UTF-16 code units (characters above U+FFFF are two)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _cut(text: str, units: int) -> str:
    """``text``'s first ``units`` UTF-16 code units, less a character that would be split."""
    head = text.encode("utf-16-le", "surrogatepass")[:2 * units]
    if head and 0xD8 <= head[-1] <= 0xDB:  # a high surrogate whose pair was cut off
        head = head[:-2]
    return head.decode("utf-16-le", "surrogatepass")


@dataclass(frozen=True)
class XlsxFile:
    """A workbook's bytes; how many text cells of each column were cut to
    :data:`EXCEL_MAX_CELL_CHARS`; and how many numbers of each column were written as text, by
    reason (``{"amount": {"infinity": 2}}``). Columns in table order; empty when none was."""

    data: bytes
    cut: dict[str, int] = field(default_factory=dict)
    as_text: dict[str, dict[str, int]] = field(default_factory=dict)


class _LongCells:
    """Text cells over Excel's limit: cut and counted by column, or refused (``long_cells``)."""

    def __init__(self, columns: list[str], refuse: bool, first_row: int) -> None:
        self.columns = columns
        self.refuse = refuse
        self.first_row = first_row  # the sheet row (0-based) of the table's first row
        self.cut: Counter[str] = Counter()

    def fit(self, text: str, r: int, c: int) -> str:
        """``text``, cut to Excel's limit when over it.

        Raises:
            ValueError: over the limit with ``long_cells: error`` (names the column and row).
        """
        # A string of at most half the limit in code points cannot exceed it in UTF-16 units.
        if len(text) <= EXCEL_MAX_CELL_CHARS // 2 or (units := utf16_units(text)) <= EXCEL_MAX_CELL_CHARS:
            return text
        if self.refuse:
            raise ValueError(
                f"column {self.columns[c]!r}, row {r - self.first_row + 1}: a text of {units:,} characters is over "
                f"Excel's limit of {EXCEL_MAX_CELL_CHARS:,} characters a cell (long_cells: error); shorten it in the "
                "data, attach the data as csv or parquet, or set long_cells: cut to send it cut to fit")
        self.cut[self.columns[c]] += 1
        return _cut(text, EXCEL_MAX_CELL_CHARS)


_DATE = "yyyy-mm-dd"
_DATETIME = "yyyy-mm-dd hh:mm:ss"


@dataclass(frozen=True)
class _Plan:
    """How one column is written: its values' ``kind`` (``text``, ``nested``, ``bool``,
    ``number``, ``datetime``, ``date``), its header and its Excel number format (``None``: none)."""

    kind: str
    header: str
    num_format: str | None = None


def _kind(t: pa.DataType) -> str:
    """The body's :func:`~.cells.column_kind`, with what Excel tells apart: nested values, and
    timestamps (``datetime``) from dates; other times (durations, times of day) are text."""
    if is_nested(t):
        return "nested"
    kind = column_kind(t)
    if kind == "time":
        return "datetime" if pa.types.is_timestamp(t) else "date" if pa.types.is_date(t) else "text"
    return kind


def _plan(name: str, column: pa.ChunkedArray, spec: AttachmentSpec, shown: Column | None,
          formats: Formats) -> tuple[pa.ChunkedArray, _Plan]:
    """``column`` ready to write (dictionaries decoded; timestamps as naive wall time in their
    zone, at most microseconds) and its :class:`_Plan`."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    kind = _kind(column.type)
    header = shown.label if spec.labels and shown is not None and shown.label else name
    pattern = shown.format if shown is not None and shown.format_kind == "date" else None
    if kind == "number":
        integer = pa.types.is_integer(column.type)
        own = shown.format if shown is not None and shown.format_kind == "number" else None
        spec_text = own or (formats.int_format if integer else formats.float_format)
        return column, _Plan(kind, header, number_format(spec_text, shown.unit if shown else None, integer=integer))
    if kind == "date":
        return column, _Plan(kind, header, date_format(pattern or formats.date_format) or _DATE)
    if kind == "datetime":
        if column.type.tz:
            header = f"{header} ({column.type.tz})"
            column = pc.local_timestamp(column)  # the wall time in the column's zone
        if column.type.unit == "ns":
            column = column.cast(pa.timestamp("us"), safe=False)  # Excel shows at most milliseconds
        code = date_format(pattern or formats.datetime_format) or _DATETIME
        return column, _Plan(kind, header, with_fractions(code) if has_fractions(column) else code)
    return column, _Plan(kind, header)


class _Cells:
    """Writes cells by their column's :class:`_Plan`: text fitted by :class:`_LongCells`, numbers
    Excel cannot hold as text (counted by column and reason)."""

    def __init__(self, sheet: Any, book: Any, plans: list[_Plan], long_cells: _LongCells) -> None:
        self.sheet = sheet
        self.kinds = [p.kind for p in plans]
        codes = {p.num_format for p in plans if p.num_format}
        made = {code: book.add_format({"num_format": code}) for code in codes}
        self.formats = [made.get(p.num_format) if p.num_format else None for p in plans]
        self.long_cells = long_cells
        self.as_text: Counter[tuple[str, str]] = Counter()

    def write(self, r: int, c: int, value: Any) -> None:
        if value is None:
            return  # an empty cell
        kind, sheet = self.kinds[c], self.sheet
        if kind == "number":
            number = excel_number(value)
            if isinstance(number, float):
                sheet.write_number(r, c, number, self.formats[c])
            elif number is not None:  # None: NaN, an empty cell
                self.as_text[(self.long_cells.columns[c], number)] += 1
                sheet.write_string(r, c, _number_text(value))
        elif kind == "datetime":
            sheet.write_datetime(r, c, value, self.formats[c])
        elif kind == "date":
            sheet.write_datetime(r, c, dt.datetime.combine(value, dt.time()), self.formats[c])
        elif kind == "bool":
            sheet.write_boolean(r, c, value)
        else:
            text = json_text(value) if kind == "nested" else str(value)
            sheet.write_string(r, c, self.long_cells.fit(text, r, c))

    def counted(self) -> dict[str, dict[str, int]]:
        """The numbers written as text: ``{column: {reason: count}}``, columns in table order."""
        out: dict[str, dict[str, int]] = {}
        for name in self.long_cells.columns:
            reasons = {reason: n for (column, reason), n in self.as_text.items() if column == name}
            if reasons:
                out[name] = reasons
        return out


def _number_text(value: int | float | decimal.Decimal) -> str:
    """A number Excel cannot hold, as text: ``inf``, ``-inf``, all its digits."""
    return repr(value) if isinstance(value, float) else str(value)


def write_xlsx(table: pa.Table, spec: AttachmentSpec, columns: Mapping[str, Column] | None = None,
               formats: Formats | None = None) -> XlsxFile:
    """``table`` as an XLSX workbook (one sheet, ``data``); see the module docstring.
    ``columns``: the presentation of ``table.columns`` by name (labels with ``spec.labels``,
    formats, units); ``formats``: the gem's default formats.

    Returns:
        the workbook, with the text cells cut to Excel's limit and the numbers written as text
        counted by column.

    Raises:
        ValueError: more rows or columns than a worksheet holds (the message says how many);
            a text cell over :data:`EXCEL_MAX_CELL_CHARS` with ``long_cells: error`` (the
            message names the column and the row).
    """
    return write_workbook([("data", table, columns or {})], spec, formats)


def write_workbook(sheets: Sequence[tuple[str, pa.Table, Mapping[str, Column]]], spec: AttachmentSpec,
                   formats: Formats | None = None) -> XlsxFile:
    """A workbook of one worksheet per ``(name, table, presentation)``, in order, each written
    as :func:`write_xlsx` writes its one (names already checked: :mod:`~mailgem.gems.email.sheets`).
    With several sheets, the columns cut or written as text are named ``sheet: column``.

    Raises:
        ValueError: as :func:`write_xlsx`; with several sheets, the message names the sheet.
    """
    formats = formats or Formats()
    cut: dict[str, int] = {}
    as_text: dict[str, dict[str, int]] = {}
    import xlsxwriter  # here: a run that writes no workbook never pays its import (~30 ms)

    with tempfile.TemporaryDirectory(prefix="mailgem-xlsx-") as tmp:
        path = Path(tmp) / "data.xlsx"
        # constant_memory flushes each row as it is written (each sheet has its own temporary
        # file); strings_to_* off: text stays text.
        book = xlsxwriter.Workbook(str(path), {
            "constant_memory": True, "tmpdir": tmp, "strings_to_formulas": False, "strings_to_urls": False,
            "strings_to_numbers": False, "nan_inf_to_errors": False,
        })
        for name, table, columns in sheets:
            where = f"{name}: " if len(sheets) > 1 else ""
            try:
                sheet_cut, sheet_as_text = _write_sheet(book, name, table, spec, columns, formats)
            except ValueError as exc:
                raise ValueError(f"sheet {name!r}: {exc}" if where else str(exc)) from None
            cut |= {where + column: n for column, n in sheet_cut.items()}
            as_text |= {where + column: reasons for column, reasons in sheet_as_text.items()}
        book.close()  # not on an error: the temporary directory goes with the half-written book
        return XlsxFile(path.read_bytes(), cut, as_text)


def _write_sheet(book: Any, name: str, table: pa.Table, spec: AttachmentSpec, columns: Mapping[str, Column],
                 formats: Formats) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Write ``table`` to a new worksheet ``name`` of ``book``; the columns cut and written as
    text (see :class:`XlsxFile`)."""
    rows = table.num_rows + (1 if spec.header else 0)
    if rows > MAX_ROWS or table.num_columns > MAX_COLUMNS:
        raise ValueError(f"{table.num_rows:,} rows x {table.num_columns:,} columns do not fit an Excel worksheet "
                         f"({MAX_ROWS:,} rows x {MAX_COLUMNS:,} columns, header included): use format csv or parquet, "
                         "or filter the frame")
    prepared = [_plan(column_name, column, spec, columns.get(column_name), formats)
                for column_name, column in zip(table.column_names, table.columns, strict=True)]
    plans = [plan for _, plan in prepared]
    table = pa.table([column for column, _ in prepared], names=table.column_names)
    sheet = book.add_worksheet(name)
    for i, width in enumerate(_widths(table, [p.header for p in plans])):
        sheet.set_column(i, i, width)
    r = 0
    if spec.header:
        header_fmt = book.add_format({"bold": True, "bottom": 1})
        for c, plan in enumerate(plans):
            sheet.write_string(0, c, plan.header, header_fmt)
        sheet.freeze_panes(1, 0)
        r = 1
    cells = _Cells(sheet, book, plans, _LongCells(table.column_names, spec.long_cells == "error", r))
    for batch in table.to_batches(max_chunksize=10_000):
        for values in zip(*(column.to_pylist() for column in batch.columns), strict=True):
            for c, value in enumerate(values):
                cells.write(r, c, value)
            r += 1
    if spec.header and table.num_columns:
        sheet.autofilter(0, 0, max(0, r - 1), table.num_columns - 1)
    cut = cells.long_cells.cut
    return {n: cut[n] for n in table.column_names if cut[n]}, cells.counted()
