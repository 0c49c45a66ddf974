"""CSV attachments (RFC 4180): Arrow's C++ writer, CRLF line ends, UTF-8 (optionally with a BOM),
nested values as JSON, timestamps in ISO 8601, and formula-like text neutralised (OWASP "CSV
Injection"), in the header row too."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..properties import AttachmentSpec
from .cells import has_fractions, is_nested, json_text

__all__ = ["write_csv", "escape_formulas", "nested_as_json", "timestamps_as_text", "escape_formula"]

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


def escape_formula(text: str) -> str:
    """One text (a header cell) escaped as :func:`escape_formulas` escapes cells."""
    return "'" + text if re.match(_FORMULA_START, text) and not re.match(_NUMBER, text) else text


def _seconds_unit(column: pa.ChunkedArray) -> str:
    """The unit a timestamp column is written in: ``s`` when no value has a fraction of a second,
    ``ns`` when some value has nanoseconds, else ``us`` (6 digits). Arrow compute, no Python loop."""
    if not has_fractions(column):
        return "s"
    if column.type.unit == "ns" and pc.any(pc.not_equal(pc.nanosecond(column), 0)).as_py():
        return "ns"
    return "us"


def _offsets(local: pa.ChunkedArray, instant: pa.ChunkedArray) -> pa.ChunkedArray:
    """The UTC offset of each value as ISO 8601 text (``+01:00``; ``+00:53:28`` for a zone's
    historical local mean time), from its wall time ``local`` and its ``instant`` (same unit).
    The few distinct offsets are formatted once and taken by index."""
    per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[instant.type.unit]
    offset = pc.subtract(local.cast(pa.int64()), instant.cast(pa.int64()))
    distinct = pc.unique(offset).drop_null()
    texts = []
    for value in distinct.to_pylist():
        seconds = abs(value) // per_second
        text = f"{'-' if value < 0 else '+'}{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"
        texts.append(text + (f":{seconds % 60:02d}" if seconds % 60 else ""))
    return pc.take(pa.array(texts, pa.string()), pc.index_in(offset, value_set=distinct))


def timestamps_as_text(table: pa.Table) -> pa.Table:
    """Timestamp columns as the CSV writer writes them, ISO 8601: ``2024-03-01 12:00:00`` (naive: wall time without
    zone) or ``2024-03-01 12:00:00+01:00`` (aware: the wall time in the column's zone and its
    offset), with 6 digits of fractions (9 for nanoseconds) only in columns that have them.
    Arrow compute throughout (1,000,000 aware values in about 0.3 s)."""
    if not any(pa.types.is_timestamp(t) for t in table.schema.types):
        return table
    columns = []
    for column in table.columns:
        if pa.types.is_timestamp(column.type):
            unit = _seconds_unit(column)
            if column.type.tz:  # Arrow's own text for these has no colon in the offset (+0100), Z for UTC
                local = pc.local_timestamp(column)
                text = local.cast(pa.timestamp(unit), safe=False).cast(pa.string())
                column = pc.binary_join_element_wise(text, _offsets(local, column), "")
            else:  # the CSV writer's own text, unquoted: "2024-03-01 12:00:00" in seconds
                column = column.cast(pa.timestamp(unit), safe=False)
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def write_csv(table: pa.Table, spec: AttachmentSpec, labels: Mapping[str, str] | None = None) -> bytes:
    """``table`` as CSV bytes per ``spec``: all rows, raw values, nulls as empty fields.

    Lines end in CRLF (RFC 4180 §2); text is UTF-8, with a BOM when ``spec.bom``; formula-like
    text cells, and header cells, are escaped unless ``spec.csv_formula_escape`` is off. The
    header shows ``labels[name]`` (``{name: label}``) where given, else the name. Timestamps are
    ISO 8601 (:func:`timestamps_as_text`). Arrow's C++ CSV writer does the work (about 10x
    pandas ``to_csv``).

    Raises:
        ValueError: a column type the CSV writer cannot write (the message names the column).
    """
    table = timestamps_as_text(nested_as_json(table))
    headers = [(labels or {}).get(name, name) for name in table.column_names]
    if spec.csv_formula_escape:
        table = escape_formulas(table)
        headers = [escape_formula(h) for h in headers]
    sink = io.BytesIO()
    if spec.bom:
        sink.write(_UTF8_BOM)
    options = pacsv.WriteOptions(include_header=spec.header, delimiter=spec.delimiter, quoting_style="needed", eol="\r\n")
    try:
        pacsv.write_csv(table.rename_columns(headers), sink, options)
    except pa.ArrowException as exc:
        raise ValueError(_csv_problem(table, options, exc)) from None
    return sink.getvalue()
