"""Attachments: one small interface over the formats (``csv_format``, ``xlsx_format``,
``parquet_format``), safe file names (``file_names``), and compression for CSV."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa
from zlib_ng import gzip_ng_threaded

from ..properties import AttachmentSpec, Column, Formats
from .cells import in_zone
from .csv_format import write_csv
from .logged import warn_once
from .parquet_format import PARQUET_MIME, write_parquet
from .table import summarise
from .xlsx_format import EXCEL_MAX_CELL_CHARS, XLSX_MIME, write_workbook, write_xlsx

__all__ = ["Attachment", "build_attachment", "build_csv", "noted_default_name"]

log = logging.getLogger("mailgem.gems")


@dataclass(frozen=True)
class Attachment:
    """Bytes ready to attach, with their file name, MIME type and Content-Type parameters.
    With ``content_id``, an inline part of the HTML body (``multipart/related``, RFC 2387)
    that the HTML shows as ``cid:<content_id>`` (RFC 2392). ``notes``: what was changed to
    write it without failing (XLSX cells cut to Excel's limit, numbers Excel cannot hold written
    as text, a file name that rendered empty), for the delivery report."""

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


def build_attachment(table: pa.Table, spec: AttachmentSpec, file_name: str, timezone: str | None = None,
                     columns: Mapping[str, Column] | None = None, formats: Formats | None = None) -> Attachment:
    """``table`` (its ``spec.columns``, every row) as an attachment in ``spec.format``, named
    ``file_name`` (already rendered and made safe). Time-zone-aware timestamps keep their zone
    (CSV writes ISO 8601 with the offset, XLSX the wall time with the zone in the header,
    Parquet the zone in its type), or are shown in ``timezone`` when given.

    ``columns`` is the presentation of ``table.columns`` by name (:attr:`TableOptions.presentation`):
    with ``spec.labels``, the CSV and XLSX headers use its labels; XLSX cells also get its
    number and date formats and units (and ``formats``' defaults). Parquet keeps column names.

    XLSX text cells over Excel's limit are cut (``long_cells: cut``), and numbers Excel cannot
    hold are written as text: the attachment's ``notes`` say in which columns, and a warning
    is logged.

    Raises:
        ValueError: the data cannot be written in that format (the message names the column,
            or the limit: XLSX holds at most 1,048,576 rows and 16,384 columns, and with
            ``long_cells: error`` at most 32,767 characters a cell).
    """
    columns = {**(columns or {}), **spec.presentation}  # the attachment's own presentation first
    if spec.sheets:
        workbook = write_workbook(_sheets(in_zone(table, timezone), spec, columns), spec, formats)
        notes = [_cut_note(file_name, workbook.cut), _as_text_note(file_name, workbook.as_text)]
        return Attachment(file_name, workbook.data, *XLSX_MIME, notes="; ".join(n for n in notes if n) or None)
    if spec.column_names:
        table = table.select(spec.column_names)
    table = in_zone(table, timezone)
    if spec.format == "xlsx":
        workbook = write_xlsx(table, spec, columns, formats)
        notes = [_cut_note(file_name, workbook.cut), _as_text_note(file_name, workbook.as_text)]
        return Attachment(file_name, workbook.data, *XLSX_MIME, notes="; ".join(n for n in notes if n) or None)
    if spec.format == "parquet":
        return Attachment(file_name, write_parquet(table), *PARQUET_MIME)
    labels = {name: c.label for name, c in (columns or {}).items() if c.label} if spec.labels else {}
    return _compressed(write_csv(table, spec, labels), spec, file_name)


def _sheets(table: pa.Table, spec: AttachmentSpec,
            columns: Mapping[str, Column]) -> list[tuple[str, pa.Table, dict[str, Column]]]:
    """``(name, rows, presentation)`` of each of ``spec.sheets``: its summary of ``table``, or
    its columns of ``table`` (default: the attachment's, else all).

    Raises:
        ValueError: a sheet names a column ``table`` does not have (names the sheet).
    """
    out = []
    for sheet in spec.sheets or []:
        try:
            if sheet.summary is not None:
                rows = summarise(table, sheet.summary)
            else:
                names = sheet.column_names or spec.column_names
                rows = table.select(names) if names else table
        except (KeyError, pa.ArrowException) as exc:
            raise ValueError(f"sheet {sheet.name!r}: {exc}; the rows have: {', '.join(table.column_names)}") from None
        out.append((sheet.name, rows, {**columns, **sheet.presentation}))
    return out


def noted_default_name(attachment: Attachment, template: str) -> Attachment:
    """``attachment`` noting that its file name ``template`` (``attachments[0].file_name``)
    rendered empty, so it went out under the default name (see :func:`file_name_or_default`);
    also logged as a warning."""
    note = f"file name template {template} rendered empty; sent as {attachment.file_name}"
    warn_once(f"file name template {template} rendered empty (a null or empty value in the template?); sent as "
               f"{attachment.file_name}; the delivery report's notes name each message")
    return dataclasses.replace(attachment, notes="; ".join(n for n in (note, attachment.notes) if n))


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


def _as_text_note(file_name: str, as_text: dict[str, dict[str, int]]) -> str | None:
    """What the delivery report says of XLSX numbers written as text (``None``: none were),
    also logged as a warning."""
    if not as_text:
        return None
    count = sum(n for reasons in as_text.values() for n in reasons.values())
    where = ", ".join(f"{column} ({', '.join(reasons)})" for column, reasons in as_text.items())
    note = (f"xlsx attachment {file_name!r}: {count:,} number{'s' if count > 1 else ''} Excel cannot hold written as "
            f"text in column{'s' if len(as_text) > 1 else ''} {where}")
    warn_once(f"xlsx: numbers Excel cannot hold written as text in column{'s' if len(as_text) > 1 else ''} {where}; "
               "attach the data as csv or parquet to keep them as numbers (the delivery report's notes name each message)")
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
