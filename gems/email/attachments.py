"""CSV attachments from Arrow tables, optionally gzip- or zip-compressed."""

from __future__ import annotations

import gzip
import io
import zipfile
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pacsv

from .properties import CsvAttachment

__all__ = ["Attachment", "build_csv"]


@dataclass(frozen=True)
class Attachment:
    """Bytes ready to attach, with their file name and MIME type."""

    file_name: str
    data: bytes
    maintype: str
    subtype: str


def build_csv(table: pa.Table, spec: CsvAttachment, file_name: str) -> Attachment:
    """Write ``table`` (all its rows, raw values, nulls as empty fields) as CSV per ``spec``.

    ``file_name`` is the rendered name; ``.gz`` / ``.zip`` is appended when compressing and
    missing. Arrow's C++ CSV writer does the work (about 10x pandas ``to_csv``).
    """
    if spec.columns:
        table = table.select(spec.columns)
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=spec.header, delimiter=spec.delimiter,
                                                    quoting_style="needed"))
    data = sink.getvalue()
    if spec.compression == "gzip":
        name = file_name if file_name.endswith(".gz") else file_name + ".gz"
        # mtime=0 keeps re-runs byte-identical.
        return Attachment(name, gzip.compress(data, compresslevel=6, mtime=0), "application", "gzip")
    if spec.compression == "zip":
        inner = file_name.removesuffix(".zip")
        name = inner + ".zip"
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            zf.writestr(zipfile.ZipInfo(inner, date_time=(1980, 1, 1, 0, 0, 0)), data, compress_type=zipfile.ZIP_DEFLATED)
        return Attachment(name, out.getvalue(), "application", "zip")
    return Attachment(file_name, data, "text", "csv")
