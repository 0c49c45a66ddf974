"""``aggregates`` in templates: statistics of each column over a message's rows (or, for
``skip_if``, over the whole frame), computed only when a template reads them.

``{{ aggregates.error_rate.max }}`` is the largest ``error_rate`` of the rows the message is
about: every row of its group (``per_group``), its one row (``per_row``), the whole frame
(``report``). Each column gives a dict:

- numbers (integers, floats, decimals): ``count``, ``nulls``, ``sum``, ``mean``, ``min``, ``max``;
- booleans: ``count``, ``nulls``, ``sum`` (how many are true), ``min``, ``max``;
- text, dates and timestamps: ``count``, ``nulls``, ``min``, ``max``;
- anything else (lists, structs, binary): ``count`` and ``nulls``.

``count`` is the number of non-null values; ``sum``, ``mean``, ``min`` and ``max`` skip nulls and
are null (``None``) when a column has no value, as in SQL. On the driver and on Spark's workers
they are computed with ``pyarrow.compute`` over the message's Arrow rows; a run-level condition
on a distributed Spark frame gets them from one Spark aggregation instead
(:func:`spark_frame_stats`), never by collecting the frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Aggregates", "column_stats", "spark_frame_stats"]


def _numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def _orderable(kind: pa.DataType) -> bool:
    return (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_temporal(kind)
            or pa.types.is_boolean(kind))


def column_stats(values: pa.ChunkedArray | pa.Array) -> dict[str, Any]:
    """The statistics of one column (see the module docstring), as Python values."""
    kind = values.type
    nulls = values.null_count
    out: dict[str, Any] = {"count": len(values) - nulls, "nulls": nulls}
    if _numeric(kind) or pa.types.is_boolean(kind):
        out["sum"] = pc.sum(values).as_py()
        if not pa.types.is_boolean(kind):
            out["mean"] = pc.mean(values).as_py()
    if _numeric(kind) or _orderable(kind):
        extremes = pc.min_max(values).as_py()
        out["min"], out["max"] = extremes["min"], extremes["max"]
    return out


class Aggregates(Mapping[str, dict[str, Any]]):
    """``{column: {count, nulls, sum, mean, min, max}}`` over ``table``'s rows, each column's
    computed the first time a template reads it (a condition that reads one column of a wide
    frame costs one column's pass). An unknown column is a ``KeyError`` (in a template: an
    undefined value, an error when used)."""

    __slots__ = ("_table", "_done")

    def __init__(self, table: pa.Table) -> None:
        self._table = table
        self._done: dict[str, dict[str, Any]] = {}

    def __getitem__(self, column: str) -> dict[str, Any]:
        stats = self._done.get(column)
        if stats is None:
            if not isinstance(column, str) or column not in self._table.column_names:
                raise KeyError(column)
            stats = self._done[column] = column_stats(self._table.column(column))
        return stats

    def __iter__(self) -> Iterator[str]:
        return iter(self._table.column_names)

    def __len__(self) -> int:
        return self._table.num_columns

    def __repr__(self) -> str:
        return f"Aggregates(columns={self._table.column_names!r})"


def spark_frame_stats(frame: Any, columns: Iterable[str] | None, *, timezone: str | None) -> tuple[int, dict[str, Any]]:
    """The row count of a Spark frame and the statistics of ``columns`` (``None``: every
    column), in one Spark aggregation (one job; only its one-row result reaches the driver).

    Returns:
        ``(row_count, {column: stats})``; the stats as :func:`column_stats` gives them.
    """
    from pyspark.sql import functions as F

    from ..data import collect

    wanted = None if columns is None else set(columns)
    exprs = [F.count(F.lit(1)).alias("_rows")]
    plan: dict[str, list[str]] = {}  # column: its aggregates, named _<position>_<stat> in the result
    for i, field in enumerate(frame.schema.fields):
        if wanted is not None and field.name not in wanted:
            continue
        col = F.col("`" + field.name.replace("`", "``") + "`")
        kind = field.dataType.typeName()
        numeric = kind in ("byte", "short", "integer", "long", "float", "double", "decimal")
        stats = {"count": F.count(col)}
        if numeric:
            stats.update(sum=F.sum(col), mean=F.avg(col))
        elif kind == "boolean":
            stats["sum"] = F.sum(col.cast("int"))
        if numeric or kind in ("boolean", "string", "date", "timestamp", "timestamp_ntz"):
            stats.update(min=F.min(col), max=F.max(col))
        plan[f"_{i}_"] = [field.name, *stats]
        exprs += [e.alias(f"_{i}_{name}") for name, e in stats.items()]
    [row] = collect(frame.agg(*exprs), all_rows=True, head_rows=1, timezone=timezone).table.to_pylist()
    total = int(row["_rows"])
    out: dict[str, Any] = {}
    for prefix, (name, *stats_names) in plan.items():
        values = {stat: row[prefix + stat] for stat in stats_names}
        values["nulls"] = total - int(values["count"])
        out[name] = values
    return total, out
