"""XLSX attachments: a workbook Excel opens as a typed table (xlsxwriter, constant-memory mode).

Numbers are numbers, booleans booleans, dates and timestamps Excel dates with a date format;
text is always written as text — never as a formula, a URL or a number — so data cannot run in
the spreadsheet. Nested values are compact JSON text. A bold header row is frozen with an
autofilter, and column widths follow the data (the header and the first 1,000 rows).
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import xlsxwriter

from ..properties import AttachmentSpec
from .table import is_nested, json_text

__all__ = ["write_xlsx", "XLSX_MIME", "MAX_ROWS", "MAX_COLUMNS"]

XLSX_MIME = ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet")
# Excel's worksheet limits (Microsoft, "Excel specifications and limits").
MAX_ROWS = 1_048_576
MAX_COLUMNS = 16_384
_MAX_WIDTH = 60  # characters; wider columns are left to the user
_WIDTH_SAMPLE_ROWS = 1_000


def _cell_text(value: Any) -> str:
    if isinstance(value, list | dict | tuple):
        return json_text(value)
    return str(value)


def _widths(table: pa.Table) -> list[float]:
    sample = table.slice(0, _WIDTH_SAMPLE_ROWS)
    widths = []
    for name, column in zip(table.column_names, sample.columns, strict=True):
        longest = max([len(name) + 2] + [len(_cell_text(v)) for v in column.to_pylist() if v is not None])
        widths.append(min(_MAX_WIDTH, max(8, longest + 1)))
    return widths


def write_xlsx(table: pa.Table, spec: AttachmentSpec) -> bytes:
    """``table`` as an XLSX workbook (one sheet, ``data``); see the module docstring.

    Raises:
        ValueError: more rows or columns than a worksheet holds (the message says how many).
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
        for batch in table.to_batches(max_chunksize=10_000):
            columns = [column.to_pylist() for column in batch.columns]
            for values in zip(*columns, strict=True):
                for c, value in enumerate(values):
                    _write(sheet, r, c, value, nested[c], date_fmt, datetime_fmt)
                r += 1
        if spec.header and table.num_columns:
            sheet.autofilter(0, 0, max(0, r - 1), table.num_columns - 1)
        book.close()
        return path.read_bytes()


def _write(sheet: Any, r: int, c: int, value: Any, nested: bool, date_fmt: Any, datetime_fmt: Any) -> None:
    if value is None:
        return  # an empty cell
    if nested:
        sheet.write_string(r, c, json_text(value))
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
        sheet.write_string(r, c, str(value))
