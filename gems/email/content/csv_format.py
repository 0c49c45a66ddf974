"""CSV attachments (RFC 4180): Arrow's C++ writer, CRLF line ends, UTF-8 (optionally with a BOM),
nested values as JSON, and formula-like text neutralised (OWASP "CSV Injection")."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..properties import AttachmentSpec
from .table import is_nested, json_text

__all__ = ["write_csv", "escape_formulas", "nested_as_json"]

# A cell a spreadsheet would run as a formula or DDE command.
_FORMULA_START = r"^[=+\-@\t\r]"
# ...unless the text is a number ("-2.5", "+1e3"), which a spreadsheet reads as a number anyway.
_NUMBER = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"
_UTF8_BOM = b"\xef\xbb\xbf"


def _csv_problem(table: pa.Table, options: pacsv.WriteOptions, exc: Exception) -> str:
    """Which columns the CSV writer refuses (tried one at a time, first row only), and the fix."""
    refused = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        try:
            pacsv.write_csv(pa.table([column.slice(0, 1)], names=[name]), io.BytesIO(), options)
        except pa.ArrowException:
            refused.append(f"{name!r} ({column.type})")
    if not refused:
        return f"the CSV writer failed: {exc}"
    return (f"the CSV writer cannot write column {', '.join(refused)}: leave it out with the attachment's "
            "columns option, or turn it into text in the job's transform (e.g. to_json)")


def nested_as_json(table: pa.Table) -> pa.Table:
    """Lists, structs and maps (which CSV cannot hold) as compact JSON text, as in the body's table."""
    if not any(is_nested(t) for t in table.schema.types):
        return table
    columns = [pa.array([None if v is None else json_text(v) for v in column.to_pylist()], pa.string())
               if is_nested(column.type) else column for column in table.columns]
    return pa.table(columns, names=table.column_names)


def escape_formulas(table: pa.Table) -> pa.Table:
    """Text cells a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``,
    tab or CR) get a leading ``'``, as OWASP recommends; text that is a number, and every
    non-text column, is left alone."""
    columns = []
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            starts = pc.match_substring_regex(column, _FORMULA_START)
            if pc.any(starts).as_py():  # the number test only where some cell starts like a formula
                risky = pc.and_(starts, pc.invert(pc.match_substring_regex(column, _NUMBER)))
                column = pc.if_else(risky, pc.binary_join_element_wise(pa.scalar("'"), column, pa.scalar("")), column)
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def write_csv(table: pa.Table, spec: AttachmentSpec) -> bytes:
    """``table`` as CSV bytes per ``spec``: all rows, raw values, nulls as empty fields.

    Lines end in CRLF (RFC 4180 §2); text is UTF-8, with a BOM when ``spec.bom``; formula-like
    text cells are escaped unless ``spec.csv_formula_escape`` is off. Arrow's C++ CSV writer does
    the work (about 10x pandas ``to_csv``).

    Raises:
        ValueError: a column type the CSV writer cannot write (the message names the column).
    """
    table = nested_as_json(table)
    if spec.csv_formula_escape:
        table = escape_formulas(table)
    sink = io.BytesIO()
    if spec.bom:
        sink.write(_UTF8_BOM)
    options = pacsv.WriteOptions(include_header=spec.header, delimiter=spec.delimiter, quoting_style="needed", eol="\r\n")
    try:
        pacsv.write_csv(table, sink, options)
    except pa.ArrowException as exc:
        raise ValueError(_csv_problem(table, options, exc)) from None
    return sink.getvalue()
