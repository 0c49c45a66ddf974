"""Parquet attachments, for data consumers: the Arrow table as it is, zstd-compressed (pyarrow).

Types are kept, nulls too, and a time-zone-aware timestamp keeps its zone: a column
``timestamp[us, tz=Europe/Berlin]`` is stored as a UTC-adjusted instant (Parquet's
``isAdjustedToUTC``) with the zone in the Arrow schema that pyarrow stores beside it, so
``pyarrow.parquet.read_table`` gives back ``timestamp[us, tz=Europe/Berlin]``. Nanosecond
columns are written in microseconds (what Spark and most readers take) unless a value has
nanoseconds, which are then kept.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["write_parquet", "PARQUET_MIME"]

# The media type IANA registered for Parquet (2024).
PARQUET_MIME = ("application", "vnd.apache.parquet")


def _microseconds(table: pa.Table) -> pa.Table:
    """``table`` with nanosecond timestamp columns in microseconds where no value has nanoseconds."""
    for i, field in enumerate(table.schema):
        t = field.type
        if pa.types.is_timestamp(t) and t.unit == "ns" and \
                not pc.any(pc.not_equal(pc.nanosecond(table.column(i)), 0)).as_py():
            table = table.set_column(i, field.with_type(pa.timestamp("us", tz=t.tz)),
                                     table.column(i).cast(pa.timestamp("us", tz=t.tz)))
    return table


def write_parquet(table: pa.Table) -> bytes:
    """``table`` as Parquet bytes (types, nulls and time zones kept; zstd)."""
    if any(pa.types.is_timestamp(t) and t.unit == "ns" for t in table.schema.types):
        table = _microseconds(table)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()
