"""Attachments: one small interface over the formats (``csv_format``, ``xlsx_format``,
``parquet_format``), safe file names, and compression for CSV."""

from __future__ import annotations

import io
import logging
import os
import re
import zipfile
from dataclasses import dataclass

import pyarrow as pa
from zlib_ng import gzip_ng_threaded

from ..properties import AttachmentSpec
from .csv_format import write_csv
from .parquet_format import PARQUET_MIME, write_parquet
from .xlsx_format import EXCEL_MAX_CELL_CHARS, XLSX_MIME, write_xlsx

__all__ = ["Attachment", "build_attachment", "build_csv", "safe_file_name", "MAX_FILE_NAME_CHARS"]

log = logging.getLogger("mailgem.gems")

# Long enough for any report's name, short enough for every mail client and file system (255).
MAX_FILE_NAME_CHARS = 150
# Path separators and control characters: a file name from data must not climb directories or
# carry characters no header may hold (RFC 5322 §3.2).
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f-\x9f]+")


@dataclass(frozen=True)
class Attachment:
    """Bytes ready to attach, with their file name, MIME type and Content-Type parameters.
    With ``content_id``, an inline part of the HTML body (``multipart/related``, RFC 2387)
    that the HTML shows as ``cid:<content_id>`` (RFC 2392). ``notes``: what was changed in
    the data to write it without failing (XLSX cells cut to Excel's limit), for the delivery
    report."""

    file_name: str
    data: bytes
    maintype: str
    subtype: str
    params: tuple[tuple[str, str], ...] = ()
    content_id: str | None = None
    notes: str | None = None


def _gzip(data: bytes, level: int) -> bytes:
    """gzip ``data`` with zlib-ng on every core: one standard gzip stream (pigz-style blocks),
    about 4x faster than the stdlib's zlib at the same level and size."""
    out = io.BytesIO()
    # Its header has mtime 0, so re-runs are byte-identical.
    with gzip_ng_threaded.open(out, "wb", compresslevel=level, threads=os.cpu_count() or 1) as f:
        f.write(data)
    return out.getvalue()


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


def in_zone(table: pa.Table, zone: str | None) -> pa.Table:
    """Time-zone-aware timestamp columns shown in ``zone`` (the instant is unchanged)."""
    if zone is None or not any(pa.types.is_timestamp(t) and t.tz for t in table.schema.types):
        return table
    columns = [c.cast(pa.timestamp(c.type.unit, tz=zone)) if pa.types.is_timestamp(c.type) and c.type.tz else c
               for c in table.columns]
    return pa.table(columns, names=table.column_names)


def build_attachment(table: pa.Table, spec: AttachmentSpec, file_name: str, timezone: str | None = None) -> Attachment:
    """``table`` (its ``spec.columns``, every row) as an attachment in ``spec.format``, named
    ``file_name`` (already rendered and made safe). Time-zone-aware timestamps keep their zone
    (CSV writes the ISO 8601 offset), or are shown in ``timezone`` when given.

    XLSX text cells over Excel's limit are cut (``long_cells: cut``): the attachment's ``notes``
    say in which columns, and a warning is logged.

    Raises:
        ValueError: the data cannot be written in that format (the message names the column,
            or the limit: XLSX holds at most 1,048,576 rows and 16,384 columns, and with
            ``long_cells: error`` at most 32,767 characters a cell).
    """
    if spec.columns:
        table = table.select(spec.columns)
    table = in_zone(table, timezone)
    if spec.format == "xlsx":
        workbook = write_xlsx(table, spec)
        return Attachment(file_name, workbook.data, *XLSX_MIME, notes=_cut_note(file_name, workbook.cut))
    if spec.format == "parquet":
        return Attachment(file_name, write_parquet(table), *PARQUET_MIME)
    return _compressed(write_csv(table, spec), spec, file_name)


def _cut_note(file_name: str, cut: dict[str, int]) -> str | None:
    """What the delivery report says of XLSX cells cut to Excel's limit (``None``: none were),
    also logged as a warning, with how to refuse them instead."""
    if not cut:
        return None
    cells = sum(cut.values())
    note = (f"xlsx attachment {file_name!r}: {cells:,} cell{'s' if cells > 1 else ''} cut to Excel's "
            f"{EXCEL_MAX_CELL_CHARS:,} characters in column{'s' if len(cut) > 1 else ''} {', '.join(cut)}")
    log.warning("%s; attach the data as csv or parquet to keep every character, or set long_cells: error on the "
                "attachment to fail such messages instead", note)
    return note


def build_csv(table: pa.Table, spec: AttachmentSpec, file_name: str) -> Attachment:
    """``table`` as a CSV attachment (see :func:`build_attachment`)."""
    return build_attachment(table, spec.model_copy(update={"format": "csv"}), file_name)


def _compressed(data: bytes, spec: AttachmentSpec, file_name: str) -> Attachment:
    """CSV bytes as they are attached: raw, gzip or zip (``.gz`` / ``.zip`` added when missing)."""
    if spec.compression == "gzip":
        name = file_name if file_name.endswith(".gz") else file_name + ".gz"
        return Attachment(name, _gzip(data, spec.compression_level), "application", "gzip")
    if spec.compression == "zip":
        inner = file_name.removesuffix(".zip")
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=spec.compression_level) as zf:
            zf.writestr(zipfile.ZipInfo(inner, date_time=(1980, 1, 1, 0, 0, 0)), data, compress_type=zipfile.ZIP_DEFLATED)
        return Attachment(inner + ".zip", out.getvalue(), "application", "zip")
    return Attachment(file_name, data, "text", "csv", (("charset", "utf-8"),))
