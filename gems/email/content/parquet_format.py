"""Parquet attachments, for data consumers: the Arrow table as it is, zstd-compressed (pyarrow)."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["write_parquet", "PARQUET_MIME"]

# The media type IANA registered for Parquet (2024).
PARQUET_MIME = ("application", "vnd.apache.parquet")


def write_parquet(table: pa.Table) -> bytes:
    """``table`` as Parquet bytes (types kept, nulls kept, zstd)."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()
