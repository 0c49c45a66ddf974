"""DataFrame in, Arrow out: one engine-neutral path for Spark and pandas inputs.

Spark frames are collected as Arrow (``DataFrame.toArrow``) only as far as the email needs:
the first rows and a count when there is no attachment, every row when there is.
Values are normalised so both engines give the same email: float NaN becomes null; Spark
timestamps become naive UTC wall time, and pandas time-zone-aware ones keep their zone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mailgem.connections.errors import MailgemError

__all__ = ["FrameData", "collect", "first_groups", "instants", "is_spark_frame", "column_names", "normalise", "GemInputError"]


class GemInputError(MailgemError, TypeError):
    """The gem's input is not a Spark or pandas DataFrame, or cannot be converted to Arrow."""


@dataclass(frozen=True)
class FrameData:
    """What the email is made from.

    Attributes:
        table: Arrow table of the collected rows (all rows when ``complete``, else the first ones).
        row_count: rows in the whole input frame.
        complete: whether ``table`` holds every row.
        invalid_rows: ``{row position in table: why}`` for rows holding a value that is not
            valid text (emptied in ``table``); the emails made from them fail with that reason.
    """

    table: pa.Table
    row_count: int
    complete: bool
    invalid_rows: dict[int, str] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return list(self.table.column_names)


def is_spark_frame(frame: Any) -> bool:
    """True for a ``pyspark.sql.DataFrame`` (classic or Connect), without importing pyspark eagerly."""
    return any(c.__module__.startswith("pyspark.sql") and c.__name__ == "DataFrame" for c in type(frame).__mro__)


def column_names(frame: Any) -> list[str]:
    """Column names of a Spark or pandas frame (no data is read)."""
    if is_spark_frame(frame):
        return list(frame.columns)
    if hasattr(frame, "columns"):
        return [str(c) for c in frame.columns]
    raise GemInputError(f"the Email gem takes a Spark or pandas DataFrame, got {type(frame).__name__}")


def instants(table: pa.Table, columns: Sequence[str], zone: str) -> pa.Table:
    """Naive timestamp ``columns`` that hold wall time in ``zone`` (what a Spark worker's pandas
    batch holds for a ``TIMESTAMP``) as aware instants."""
    out = table
    for name in columns:
        if name in out.column_names and pa.types.is_timestamp(out.schema.field(name).type) and \
                out.schema.field(name).type.tz is None:
            i = out.column_names.index(name)
            out = out.set_column(i, name, pc.assume_timezone(out.column(i), zone))
    return out


def normalise(table: pa.Table, *, keep_zones: bool = False) -> pa.Table:
    """Float NaN to null, timestamps to microseconds, large strings to strings.

    With ``keep_zones`` (pandas input), a time-zone-aware column keeps its zone, so the email
    shows the instant with its offset. Without (Spark: a ``TIMESTAMP`` has no zone of its own
    and Arrow hands it over in UTC), timestamps become naive UTC wall time, as Spark shows them
    in a UTC session.
    """
    columns = []
    for spec, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_floating(spec.type):
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, spec.type), column)
        elif pa.types.is_timestamp(spec.type):
            zone = spec.type.tz if keep_zones else None
            column = column.cast(pa.timestamp("us", tz=zone), safe=False)
        elif pa.types.is_large_string(spec.type):
            column = column.cast(pa.string())
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _without_invalid_text(pdf: Any) -> tuple[Any, dict[int, str]]:
    """Empty the cells holding strings that are not valid Unicode (lone surrogates, e.g. from
    ``surrogateescape`` decoding), which Arrow cannot hold; say which rows and columns they were."""
    pdf = pdf.copy()
    invalid: dict[int, str] = {}
    for position, name in enumerate(pdf.columns):
        column = pdf.iloc[:, position]
        if column.dtype != object:
            continue
        rows = column.map(lambda v: isinstance(v, str) and not _is_valid_text(v)).to_numpy(dtype=bool).nonzero()[0]
        for row in rows:
            invalid.setdefault(int(row), f"column {str(name)!r} holds text that is not valid Unicode "
                               f"({column.iloc[row]!r}); fix it upstream, e.g. "
                               ".str.encode('utf-8', 'replace').str.decode('utf-8')")
        if len(rows):
            pdf.iloc[rows, position] = None
    return pdf, invalid


def _is_valid_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def first_groups(frame: Any, columns: Sequence[str], count: int) -> Any:
    """The rows of a Spark frame's first ``count`` groups by ``columns``, in the order
    :func:`~mailgem.gems.email.run.plan.units` takes groups (ascending, nulls last), so a preview
    of a few groups collects those groups' rows, not the whole frame.

    The keys are found by Spark (``distinct``, ``orderBy``, ``limit``) and the rows kept with a
    null-safe left semi join: a null key is a group like any other."""
    from pyspark.sql import functions as F

    keys = (frame.select(*columns).distinct()
            .orderBy(*[F.col(c).asc_nulls_last() for c in columns]).limit(count)
            .select(*[F.col(c).alias(f"_mailgem_key_{i}") for i, c in enumerate(columns)]))
    condition = [frame[c].eqNullSafe(keys[f"_mailgem_key_{i}"]) for i, c in enumerate(columns)]
    return frame.join(keys, on=condition, how="left_semi")


def collect(frame: Any, *, all_rows: bool, head_rows: int, columns: Sequence[str] | None = None,
            spark_instants: bool = False) -> FrameData:
    """Collect what the email needs from a Spark or pandas frame.

    Args:
        spark_instants: keep Spark ``TIMESTAMP`` values as UTC instants (to be shown in
            ``formats.timezone``) instead of naive session wall time.
        all_rows: collect every row (attachments, summaries); otherwise only ``head_rows``.
        columns: restrict to these columns (``None``: all).

    Raises:
        GemInputError: not a DataFrame, or a column Arrow cannot represent.
    """
    try:
        if is_spark_frame(frame):
            df = frame.select(*columns) if columns else frame
            if all_rows:
                table = df.toArrow()
                return FrameData(normalise(table, keep_zones=spark_instants), table.num_rows, True)
            count = df.count()
            table = df.limit(head_rows).toArrow()
            return FrameData(normalise(table, keep_zones=spark_instants), count, table.num_rows == count)
        if not hasattr(frame, "columns") or not hasattr(frame, "iloc"):
            raise GemInputError(f"the Email gem takes a Spark or pandas DataFrame, got {type(frame).__name__}")
        pdf = frame[list(columns)] if columns else frame
        if not all_rows:
            pdf = pdf.iloc[:head_rows]
        invalid: dict[int, str] = {}
        try:
            table = pa.Table.from_pandas(pdf, preserve_index=False)
        except UnicodeEncodeError:
            pdf, invalid = _without_invalid_text(pdf)
            table = pa.Table.from_pandas(pdf, preserve_index=False)
        return FrameData(normalise(table, keep_zones=True), len(frame), all_rows or len(frame) <= head_rows, invalid)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise GemInputError(f"a column could not be converted for the email: {exc}") from None
