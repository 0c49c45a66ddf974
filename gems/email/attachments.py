"""CSV attachments from Arrow tables, optionally gzip- or zip-compressed."""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pacsv
from zlib_ng import gzip_ng_threaded

from .properties import CsvAttachment

__all__ = ["Attachment", "build_csv"]


@dataclass(frozen=True)
class Attachment:
    """Bytes ready to attach, with their file name and MIME type."""

    file_name: str
    data: bytes
    maintype: str
    subtype: str


def _gzip(data: bytes, level: int) -> bytes:
    """gzip ``data`` with zlib-ng on every core: one standard gzip stream (pigz-style blocks),
    about 4x faster than the stdlib's zlib at the same level and size."""
    out = io.BytesIO()
    # Its header has mtime 0, so re-runs are byte-identical.
    with gzip_ng_threaded.open(out, "wb", compresslevel=level, threads=os.cpu_count() or 1) as f:
        f.write(data)
    return out.getvalue()


def build_csv(table: pa.Table, spec: CsvAttachment, file_name: str) -> Attachment:
    """Write ``table`` (all its rows, raw values, nulls as empty fields) as CSV per ``spec``.

    ``file_name`` is the rendered name; ``.gz`` / ``.zip`` is appended when compressing and
    missing. Arrow's C++ CSV writer does the work (about 10x pandas ``to_csv``); gzip is zlib-ng
    on every core.
    """
    if spec.columns:
        table = table.select(spec.columns)
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=spec.header, delimiter=spec.delimiter,
                                                    quoting_style="needed"))
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
    return Attachment(file_name, data, "text", "csv")
