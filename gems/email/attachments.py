"""CSV attachments from Arrow tables, optionally gzip- or zip-compressed."""

from __future__ import annotations

import io
import os
import re
import zipfile
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from zlib_ng import gzip_ng_threaded

from .properties import CsvAttachment
from .table import is_nested, json_text

__all__ = ["Attachment", "build_csv", "safe_file_name", "escape_formulas", "MAX_FILE_NAME_CHARS"]

# Long enough for any report's name, short enough for every mail client and file system (255).
MAX_FILE_NAME_CHARS = 150
# Path separators and control characters: a file name from data must not climb directories or
# carry characters no header may hold (RFC 5322 §3.2).
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f-\x9f]+")


# OWASP "CSV Injection": a cell a spreadsheet would run as a formula or DDE command.
_FORMULA_START = r"^[=+\-@\t\r]"
# ...unless the text is a number ("-2.5", "+1e3"), which a spreadsheet reads as a number anyway.
_NUMBER = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Attachment:
    """Bytes ready to attach, with their file name, MIME type and Content-Type parameters."""

    file_name: str
    data: bytes
    maintype: str
    subtype: str
    params: tuple[tuple[str, str], ...] = ()


def _gzip(data: bytes, level: int) -> bytes:
    """gzip ``data`` with zlib-ng on every core: one standard gzip stream (pigz-style blocks),
    about 4x faster than the stdlib's zlib at the same level and size."""
    out = io.BytesIO()
    # Its header has mtime 0, so re-runs are byte-identical.
    with gzip_ng_threaded.open(out, "wb", compresslevel=level, threads=os.cpu_count() or 1) as f:
        f.write(data)
    return out.getvalue()


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


def safe_file_name(name: str) -> str:
    """``name`` without path separators and control characters, its stem cut to
    :data:`MAX_FILE_NAME_CHARS` with the extension kept; ``data`` when nothing is left."""
    name = _UNSAFE.sub("_", name).strip(" ")
    stem, dot, extension = name.rpartition(".")
    if not dot or len(extension) > 10 or not extension.strip():
        stem, extension = name, ""
    # An empty stem (a null value rendered as nothing: ".csv") is named "data", extension kept.
    stem = stem.strip(" .") or "data"
    return stem[:MAX_FILE_NAME_CHARS] + (f".{extension}" if extension else "")


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
            risky = pc.and_(pc.match_substring_regex(column, _FORMULA_START),
                            pc.invert(pc.match_substring_regex(column, _NUMBER)))
            if pc.any(risky).as_py():
                column = pc.if_else(risky, pc.binary_join_element_wise(pa.scalar("'"), column, pa.scalar("")), column)
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def build_csv(table: pa.Table, spec: CsvAttachment, file_name: str) -> Attachment:
    """Write ``table`` (all its rows, raw values, nulls as empty fields) as CSV per ``spec``.

    ``file_name`` is the rendered name; ``.gz`` / ``.zip`` is appended when compressing and
    missing. Arrow's C++ CSV writer does the work (about 10x pandas ``to_csv``); gzip is zlib-ng
    on every core. Lines end in CRLF (RFC 4180 §2); text is UTF-8 (the part says so), with a BOM
    when ``spec.bom``; formula-like text cells are escaped unless ``spec.csv_formula_escape`` is off.

    Raises:
        ValueError: a column type the CSV writer cannot write (the message names the column).
    """
    if spec.columns:
        table = table.select(spec.columns)
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
    data = sink.getvalue()
    del sink
    if spec.compression == "gzip":
        name = file_name if file_name.endswith(".gz") else file_name + ".gz"
        return Attachment(name, _gzip(data, spec.compression_level), "application", "gzip")
    if spec.compression == "zip":
        inner = file_name.removesuffix(".zip")
        name = inner + ".zip"
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=spec.compression_level) as zf:
            zf.writestr(zipfile.ZipInfo(inner, date_time=(1980, 1, 1, 0, 0, 0)), data, compress_type=zipfile.ZIP_DEFLATED)
        return Attachment(name, out.getvalue(), "application", "zip")
    return Attachment(file_name, data, "text", "csv", (("charset", "utf-8"),))
