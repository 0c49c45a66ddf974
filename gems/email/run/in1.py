"""The second input (``in1``): which of its rows each message carries.

``apply(spark, in0, in1)``: ``in0`` makes the messages (report, per_group, per_row) and ``in1``
is data they carry (``attachments[].from: in1``, ``table.from: in1``). Without ``slice_by``
every message carries all of ``in1`` (as Prophecy's Email gem does). With ``slice_by: {in0_column:
in1_column, ...}`` a message carries the ``in1`` rows whose ``in1`` columns equal the ``in0``
columns of one of its own rows (per_row: the row; per_group: the group's rows; report: the
frame), in ``in1``'s order: an inner-join match, so a null key matches nothing, and the key
columns should have the same type on both sides (``1`` and ``"1"`` do not match).

On Spark the matching is a join computed by Spark: on the driver only the ``in1`` rows whose
keys occur in ``in0`` are collected (:func:`collect_in1`, a left semi join); when the executors
send, each ``in0`` row arrives with its ``in1`` rows as an array of structs
(:func:`attach_in1`), turned back into a table there (:func:`split_attached`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ..data import collect, is_spark_frame
from ..errors import GemValidationError
from ..properties import EmailProperties
from .in1_check import in1_uses

__all__ = ["IN1_COLUMN", "In1Rows", "In1Shipment", "in1_uses", "check_in1_frame", "collect_in1", "attach_in1",
           "attached_schema", "split_attached"]

# The column that carries each in0 row's in1 rows to the Spark executors (dropped before composing).
IN1_COLUMN = "_mailgem_in1"
# Each in1 row's place in in1, so a join's shuffle does not change the order its rows are shown in.
_POSITION = "_mailgem_position"


def check_in1_frame(props: EmailProperties, name: str, in0: Any, in1: Any) -> None:
    """Refuse, before anything is read, properties that need ``in1`` when none was given, and
    frames of two kinds (one Spark, one pandas).

    Raises:
        GemValidationError: names the field and the fix.
    """
    if in1 is None:
        uses = in1_uses(props)
        if uses:
            raise GemValidationError(
                f"gem {name!r}: {', '.join(uses)} use(s) the second input, and none was given: pass it as "
                "apply(spark, in0, in1) (pandas: apply(in0, in1)), or in a job file name two sources "
                "(sources: {recipients: ..., data: ...}); or remove those properties", [])
        return
    if is_spark_frame(in0) != is_spark_frame(in1):
        raise GemValidationError(f"gem {name!r}: in0 and in1 must both be Spark DataFrames or both pandas DataFrames; "
                                 "convert one (spark.createDataFrame(pdf) or df.toPandas())", [])


class In1Rows:
    """``in1`` as Arrow, and the rows of it each message carries (see the module docstring).

    Args:
        table: the ``in1`` rows (already only those matching ``in0``'s keys, or all of them).
        slice_by: ``{in0_column: in1_column}``; ``None``: every message carries all of ``table``.
    """

    def __init__(self, table: pa.Table, slice_by: dict[str, str] | None) -> None:
        self.table = table
        self.in0_columns = list(slice_by or {})
        self._index: dict[tuple[Any, ...], list[int]] = {}
        if slice_by:
            keys = zip(*(table.column(c).to_pylist() for c in slice_by.values()), strict=True)
            for position, key in enumerate(keys):
                if None not in key:  # a null key matches nothing (an inner join's rule)
                    self._index.setdefault(key, []).append(position)

    def for_rows(self, rows: pa.Table) -> pa.Table:
        """The ``in1`` rows for a message made of ``rows`` (``in0`` rows), in ``in1``'s order."""
        if not self.in0_columns:
            return self.table
        keys = dict.fromkeys(zip(*(rows.column(c).to_pylist() for c in self.in0_columns), strict=True))
        positions = sorted(p for key in keys if None not in key for p in self._index.get(key, ()))
        return self.table.take(pa.array(positions, pa.int64()))


@dataclass(frozen=True)
class In1Shipment:
    """What the Spark executors get of ``in1`` (it travels with the pickled sender).

    Attributes:
        whole: all of ``in1``, collected on the driver (no ``slice_by``): it must fit in the
            driver's memory, and every message carries it anyway.
        schema: with ``slice_by``, the Arrow schema of the ``in1`` rows attached to each ``in0``
            row (:func:`attach_in1`), its ``TIMESTAMP`` columns as microseconds.
        instants: those ``TIMESTAMP`` columns.
    """

    whole: pa.Table | None = None
    schema: pa.Schema | None = None
    instants: list[str] = field(default_factory=list)


def _semi_joined(in1: Any, in0: Any, slice_by: dict[str, str]) -> Any:
    """The rows of Spark frame ``in1`` whose keys occur in ``in0`` (computed by Spark)."""
    from pyspark.sql import functions as F

    keys = in0.select(*[F.col(_quoted(c)).alias(f"_mailgem_key_{i}") for i, c in enumerate(slice_by)]).distinct()
    columns = in1.columns
    in1 = in1.withColumn(_POSITION, F.monotonically_increasing_id())
    condition = [in1[_quoted(c)] == keys[f"_mailgem_key_{i}"] for i, c in enumerate(slice_by.values())]
    return in1.join(keys, on=condition, how="left_semi").orderBy(_POSITION).select(*[_quoted(c) for c in columns])


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def collect_in1(in1: Any, in0: Any, props: EmailProperties) -> In1Rows | None:
    """``in1`` collected for the driver (``None`` without one): on Spark with ``slice_by``, only
    the rows whose keys occur in ``in0`` (a left semi join), the rest of the slicing per message
    in Arrow. Time zones as :func:`mailgem.gems.email.data.collect` gives ``in0``'s."""
    if in1 is None:
        return None
    if props.slice_by and is_spark_frame(in1):
        in1 = _semi_joined(in1, in0, props.slice_by)
    data = collect(in1, all_rows=True, head_rows=0, timezone=props.formats.timezone)
    return In1Rows(data.table, props.slice_by)


def _positioned(in1: Any, instants: Sequence[str]) -> list[Any]:
    """The struct fields :func:`attach_in1` makes of each ``in1`` row: its position in ``in1``,
    then its columns, ``instants`` (``TIMESTAMP``) as microseconds since the epoch."""
    from pyspark.sql import functions as F

    return [F.monotonically_increasing_id().alias(_POSITION),
            *[F.unix_micros(F.col(_quoted(c))).alias(c) if c in instants else F.col(_quoted(c)) for c in in1.columns]]


def attach_in1(in0: Any, in1: Any, slice_by: dict[str, str], instants: Sequence[str] = ()) -> Any:
    """Spark frame ``in0`` with column :data:`IN1_COLUMN`: each row's matching ``in1`` rows as an
    array of structs in ``in1``'s order (null when none match): ``in1`` grouped by its key
    columns, left-joined to ``in0`` by Spark. Each struct starts with the row's position in
    ``in1`` (dropped by :func:`split_attached`); its ``instants`` are microseconds, as the
    workers take ``TIMESTAMP`` columns (the keys are joined as they are)."""
    from pyspark.sql import functions as F

    keys = [F.col(_quoted(c)).alias(f"_mailgem_key_{i}") for i, c in enumerate(slice_by.values())]
    rows = in1.select(*keys, F.struct(*_positioned(in1, instants)).alias(IN1_COLUMN))
    def by_position(left: Any, right: Any) -> Any:  # not by every field: a map column cannot be ordered
        return F.when(left[_POSITION] < right[_POSITION], -1).when(left[_POSITION] > right[_POSITION], 1).otherwise(0)

    grouped = rows.groupBy(*[f"_mailgem_key_{i}" for i in range(len(slice_by))]).agg(
        F.array_sort(F.collect_list(IN1_COLUMN), by_position).alias(IN1_COLUMN))
    condition = [in0[_quoted(c)] == grouped[f"_mailgem_key_{i}"] for i, c in enumerate(slice_by)]
    joined = in0.join(grouped, on=condition, how="left")
    return joined.select(*[in0[_quoted(c)] for c in in0.columns], grouped[IN1_COLUMN])


def split_attached(table: pa.Table, schema: pa.Schema, key_columns: Sequence[str]) -> tuple[pa.Table, pa.Table]:
    """A batch made by :func:`attach_in1`: its ``in0`` rows, and the ``in1`` rows of their keys
    (each key's once, even when several rows share it, in ``in1``'s order) as a table of
    ``schema`` (:func:`attached_schema`)."""
    attached = table.column(IN1_COLUMN).combine_chunks()
    rows = table.drop_columns([IN1_COLUMN])
    kind = pa.list_(pa.struct(list(schema)))
    if attached.type != kind:  # pandas' types (an all-null batch has none of its own)
        try:
            attached = attached.cast(kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            attached = pa.array(attached.to_pylist(), type=kind)
    keys = zip(*(rows.column(c).to_pylist() for c in key_columns), strict=True)
    firsts = list({k: i for i, k in reversed(list(enumerate(keys))) if None not in k}.values())
    lists = attached.take(pa.array(sorted(firsts), pa.int64())) if firsts else pa.array([], kind)
    flat = lists.flatten()
    table = pa.Table.from_struct_array(flat) if len(flat) else schema.empty_table()
    return rows, table.sort_by(_POSITION).drop_columns([_POSITION])


def attached_schema(in1: Any, instants: Sequence[str] = ()) -> pa.Schema:
    """The Arrow schema of the structs :func:`attach_in1` attaches (no rows are read)."""
    return in1.select(*_positioned(in1, instants)).limit(0).toArrow().schema
