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
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import xlsxwriter

from ..properties import AttachmentSpec
from .table import is_nested, json_text

__all__ = ["write_xlsx", "XlsxFile", "XLSX_MIME", "MAX_ROWS", "MAX_COLUMNS", "EXCEL_MAX_CELL_CHARS", "utf16_units"]

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


def _widths(table: pa.Table) -> list[float]:
    sample = table.slice(0, _WIDTH_SAMPLE_ROWS)
    widths: list[float] = []
    for name, column in zip(table.column_names, sample.columns, strict=True):
        longest = max([len(name) + 2] + [len(_cell_text(v)) for v in column.to_pylist() if v is not None])
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
    """A workbook's bytes, and how many text cells of each column were cut to
    :data:`EXCEL_MAX_CELL_CHARS` (columns in table order; empty when none was)."""

    data: bytes
    cut: dict[str, int] = field(default_factory=dict)


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


def write_xlsx(table: pa.Table, spec: AttachmentSpec) -> XlsxFile:
    """``table`` as an XLSX workbook (one sheet, ``data``); see the module docstring.

    Returns:
        the workbook, with the text cells cut to Excel's limit counted by column.

    Raises:
        ValueError: more rows or columns than a worksheet holds (the message says how many);
            a text cell over :data:`EXCEL_MAX_CELL_CHARS` with ``long_cells: error`` (the
            message names the column and the row).
    """
    rows = table.num_rows + (1 if spec.header else 0)
    if rows > MAX_ROWS or table.num_columns > MAX_COLUMNS:
        raise ValueError(f"{table.num_rows:,} rows x {table.num_columns:,} columns do not fit an Excel worksheet "
                         f"({MAX_ROWS:,} rows x {MAX_COLUMNS:,} columns, header included): use format csv or parquet, "
                         "or filter the frame")
    with tempfile.TemporaryDirectory(prefix="mailgem-xlsx-") as tmp:
        path = Path(tmp) / "data.xlsx"
        # constant_memory flushes each row as it is written; strings_to_* off: text stays text.
        book = xlsxwriter.Workbook(str(path), {
            "constant_memory": True, "tmpdir": tmp, "strings_to_formulas": False, "strings_to_urls": False,
            "strings_to_numbers": False, "nan_inf_to_errors": False,
        })
        sheet = book.add_worksheet("data")
        date_fmt = book.add_format({"num_format": "yyyy-mm-dd"})
        datetime_fmt = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        header_fmt = book.add_format({"bold": True, "bottom": 1})
        for i, width in enumerate(_widths(table)):
            sheet.set_column(i, i, width)
        r = 0
        if spec.header:
            for c, name in enumerate(table.column_names):
                sheet.write_string(0, c, name, header_fmt)
            sheet.freeze_panes(1, 0)
            r = 1
        nested = [is_nested(t) for t in table.schema.types]
        long_cells = _LongCells(table.column_names, spec.long_cells == "error", r)
        for batch in table.to_batches(max_chunksize=10_000):
            columns = [column.to_pylist() for column in batch.columns]
            for values in zip(*columns, strict=True):
                for c, value in enumerate(values):
                    _write(sheet, r, c, value, nested[c], date_fmt, datetime_fmt, long_cells)
                r += 1
        if spec.header and table.num_columns:
            sheet.autofilter(0, 0, max(0, r - 1), table.num_columns - 1)
        book.close()
        cut = {name: long_cells.cut[name] for name in table.column_names if long_cells.cut[name]}
        return XlsxFile(path.read_bytes(), cut)


def _write(sheet: Any, r: int, c: int, value: Any, nested: bool, date_fmt: Any, datetime_fmt: Any,
           long_cells: _LongCells) -> None:
    if value is None:
        return  # an empty cell
    if nested:
        sheet.write_string(r, c, long_cells.fit(json_text(value), r, c))
    elif isinstance(value, bool):
        sheet.write_boolean(r, c, value)
    elif isinstance(value, int | float | decimal.Decimal):
        number = float(value)
        if math.isnan(number):
            return
        if math.isinf(number):
            sheet.write_string(r, c, "∞" if number > 0 else "-∞")  # Excel has no infinity
        else:
            sheet.write_number(r, c, number)
    elif isinstance(value, dt.datetime):
        # Excel dates have no time zone: an aware value is written as its UTC wall time.
        naive = value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo is not None else value
        sheet.write_datetime(r, c, naive, datetime_fmt)
    elif isinstance(value, dt.date):
        sheet.write_datetime(r, c, dt.datetime.combine(value, dt.time()), date_fmt)
    else:
        sheet.write_string(r, c, long_cells.fit(str(value), r, c))
