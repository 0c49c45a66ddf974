"""DataFrame in, Arrow out: one engine-neutral path for Spark and pandas inputs.

Spark frames are collected as Arrow (``DataFrame.toArrow``) only as far as the email needs:
the first rows and a count when there is no attachment, every row when there is.
Values are normalised so both engines give the same email: float NaN becomes null.

Time zones (the contract the composer relies on): a Spark ``TIMESTAMP`` is an instant, and
reaches the composer as ``timestamp[us, tz=Z]`` where Z is ``formats.timezone`` when set, else
the Spark session's zone (``spark.sql.session.timeZone``, read once on the driver). A pandas
time-zone-aware column keeps its own zone (or takes ``formats.timezone``); naive columns (pandas
naive, Spark ``TIMESTAMP_NTZ``) stay naive wall time. Message keys keep the form earlier
versions gave these values (see :attr:`FrameData.key_zones`), so a ledger still knows them.
"""

from __future__ import annotations

import logging
import re
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mailgem.connections.errors import MailgemError

from .content.cells import in_zone

log = logging.getLogger("mailgem.gems")

__all__ = ["FrameData", "KeyZones", "collect", "first_groups", "instants", "is_spark_frame", "column_names", "normalise",
           "GemInputError", "key_form", "session_zone", "arrow_zone", "spark_instant_columns", "zoned"]

KeyZones = dict[str, tuple[str, bool]]
"""``{column: (zone, aware)}``: how a time-zone-aware column's values read in message keys, when
that differs from the table the composer gets: in ``zone``, with its offset when ``aware``, else
as naive wall time there (see :func:`key_form`)."""


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
        key_zones: how message keys show the timestamp columns (:data:`KeyZones`): as earlier
            versions did, whatever zone ``table`` shows them in, so a ledger's keys still match.
    """

    table: pa.Table
    row_count: int
    complete: bool
    invalid_rows: dict[int, str] = field(default_factory=dict)
    key_zones: KeyZones = field(default_factory=dict)

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


def session_zone(frame: Any) -> str:
    """The Spark session time zone of ``frame`` (``spark.sql.session.timeZone``; on Spark Connect
    too, where it is asked of the server), as Arrow and Python name it (:func:`arrow_zone`)."""
    return arrow_zone(str(frame.sparkSession.conf.get("spark.sql.session.timeZone")))


# Java's ZoneId.SHORT_IDS, which Spark accepts as session time zones (java.time.ZoneId javadoc).
_SHORT_IDS = {
    "ACT": "Australia/Darwin", "AET": "Australia/Sydney", "AGT": "America/Argentina/Buenos_Aires",
    "ART": "Africa/Cairo", "AST": "America/Anchorage", "BET": "America/Sao_Paulo", "BST": "Asia/Dhaka",
    "CAT": "Africa/Harare", "CNT": "America/St_Johns", "CST": "America/Chicago", "CTT": "Asia/Shanghai",
    "EAT": "Africa/Addis_Ababa", "ECT": "Europe/Paris", "IET": "America/Indiana/Indianapolis", "IST": "Asia/Kolkata",
    "JST": "Asia/Tokyo", "MIT": "Pacific/Apia", "NET": "Asia/Yerevan", "NST": "Pacific/Auckland",
    "PLT": "Asia/Karachi", "PNT": "America/Phoenix", "PRT": "America/Puerto_Rico", "PST": "America/Los_Angeles",
    "SST": "Pacific/Guadalcanal", "VST": "Asia/Ho_Chi_Minh", "EST": "-05:00", "MST": "-07:00", "HST": "-10:00",
}
_JAVA_OFFSET = re.compile(r"^(?:UTC|GMT|UT)?([+-])(\d{1,2})(?::?(\d{2}))?(?::?(\d{2}))?$")


def arrow_zone(name: str) -> str:
    """A Spark (Java) zone ID as Arrow and ``zoneinfo`` know it: ``Z`` → ``UTC``, ``-08`` /
    ``GMT+1`` / ``+01:00:00`` → ``-08:00`` / ``+01:00``, ``PST`` → ``America/Los_Angeles``; IANA
    names as they are. A zone neither knows (a seconds offset) becomes ``UTC``, with a warning:
    the times are still the right instants, labelled UTC."""
    name = name.strip()
    if name in ("Z", "UT", "UTC", "GMT", "Etc/UTC"):
        return "UTC"
    name = _SHORT_IDS.get(name, name)
    found = _JAVA_OFFSET.match(name)
    if found:
        sign, hours, minutes, seconds = found.groups()
        if int(seconds or 0) == 0 and int(hours) <= 18:
            return f"{sign}{int(hours):02d}:{minutes or '00'}"
    else:
        try:
            zoneinfo.ZoneInfo(name)
            pa.array([0], pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us", tz=name))
            return name
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError, pa.ArrowException):
            pass
    log.warning("Spark session time zone %r is not one Arrow and Python know: timestamps are shown in UTC", name)
    return "UTC"


def spark_instant_columns(frame: Any) -> list[str]:
    """The top-level ``TIMESTAMP`` columns of a Spark frame (instants; ``TIMESTAMP_NTZ`` is not one)."""
    return [f.name for f in frame.schema.fields if f.dataType.typeName() == "timestamp"]


def instants(table: pa.Table, columns: Sequence[str]) -> pa.Table:
    """``columns`` holding microseconds since the epoch (how :func:`~mailgem.gems.email.run.distributed.send_distributed`
    hands a ``TIMESTAMP`` to the workers: exact, where a pandas batch's session wall time is
    ambiguous in a daylight-saving fall-back hour) as UTC instants."""
    out = table
    for name in columns:
        if name in out.column_names and not pa.types.is_timestamp(out.schema.field(name).type):
            i = out.column_names.index(name)
            micros = out.column(i).cast(pa.int64())  # a float column when the batch had nulls
            out = out.set_column(i, name, micros.cast(pa.timestamp("us", tz="UTC")))
    return out


def zoned(table: pa.Table, zone: str | None, *, key_zone: str | None = None,
          key_aware: bool = True) -> tuple[pa.Table, KeyZones]:
    """Time-zone-aware timestamp columns shown in ``zone`` (``None``: each keeps its own; the
    instant is unchanged), and the :data:`KeyZones` for message keys that read them in
    ``key_zone`` (``None``: the column's own zone), with their offset when ``key_aware``."""
    keys = {}
    for spec in table.schema:
        if pa.types.is_timestamp(spec.type) and spec.type.tz is not None:
            own = spec.type.tz
            form = (key_zone or own, key_aware)
            if form != (zone or own, True):
                keys[spec.name] = form
    return in_zone(table, zone), keys


def key_form(table: pa.Table, key_zones: Mapping[str, tuple[str, bool]]) -> pa.Table:
    """``table`` with the ``key_zones`` columns as message keys read them (see :data:`KeyZones`)."""
    out = table
    for name, (zone, aware) in key_zones.items():
        if name in out.column_names:
            i = out.column_names.index(name)
            column = out.column(i).cast(pa.timestamp("us", tz=zone))
            out = out.set_column(i, name, column if aware else pc.local_timestamp(column))
    return out


def normalise(table: pa.Table, *, keep_zones: bool = False) -> pa.Table:
    """Float NaN to null, timestamps to microseconds, large strings to strings.

    With ``keep_zones``, a time-zone-aware column keeps its zone (see :func:`zoned` for the zone
    the email shows it in); without, timestamps become naive (UTC wall time for aware ones).
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
            timezone: str | None = None) -> FrameData:
    """Collect what the email needs from a Spark or pandas frame.

    Args:
        all_rows: collect every row (attachments, summaries); otherwise only ``head_rows``.
        columns: restrict to these columns (``None``: all).
        timezone: ``formats.timezone``: the zone instants are shown in (``None``: a Spark
            ``TIMESTAMP`` in the session's zone, a pandas aware column in its own).

    Raises:
        GemInputError: not a DataFrame, or a column Arrow cannot represent.
    """
    try:
        if is_spark_frame(frame):
            df = frame.select(*columns) if columns else frame
            if all_rows:
                table = df.toArrow()
                count = table.num_rows
            else:
                count = df.count()
                table = df.limit(head_rows).toArrow()
            # Arrow hands a TIMESTAMP over in UTC; message keys had it as naive UTC wall time,
            # or as a UTC instant with formats.timezone.
            table, keys = zoned(normalise(table, keep_zones=True), timezone or session_zone(frame),
                                key_zone="UTC", key_aware=timezone is not None)
            return FrameData(table, count, table.num_rows == count, key_zones=keys)
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
        table, keys = zoned(normalise(table, keep_zones=True), timezone)
        return FrameData(table, len(frame), all_rows or len(frame) <= head_rows, invalid, keys)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise GemInputError(f"a column could not be converted for the email: {exc}") from None
