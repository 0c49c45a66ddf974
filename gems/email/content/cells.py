"""One cell as a reader sees it: values formatted by type or by a column's presentation
(number format, unit, date pattern), time zones named and converted, nested values as JSON.
Used by the body's tables (:mod:`.table`), the chart's labels and the attachments."""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
import math
import re
import zoneinfo
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..properties import Column, Formats

__all__ = ["format_cell", "json_text", "is_nested", "column_kind", "zone_label", "in_zone", "tzinfo_of",
           "column_formatter", "clip", "has_fractions", "HUGE"]

# Past this magnitude a fixed-point format is unreadable (1.797e308 would be 414 characters).
HUGE = 1e15


def _number(value: float | decimal.Decimal, spec: str) -> str:
    """A float in the configured format; infinities as ∞, huge values in scientific notation,
    and no negative zero (``-0.00``) from rounding."""
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if abs(float(value)) >= HUGE:
        return format(float(value), ".4g")
    text = format(value, spec)
    if text.startswith("-") and not any(ch in "123456789" for ch in text):
        text = text[1:]
    return text


def json_text(value: Any) -> str:
    """Nested values (lists, structs, maps) as compact JSON."""
    if isinstance(value, list) and value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        value = {str(k): v for k, v in value}  # an Arrow map comes as (key, value) pairs
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def is_nested(data_type: pa.DataType) -> bool:
    """Lists, structs and maps: shown and written as compact JSON."""
    return pa.types.is_nested(data_type)


def format_cell(value: Any, formats: Formats) -> str:
    """Format one value for display: numbers with the format specs, dates with ``strftime``,
    nested values as compact JSON."""
    if value is None:
        return formats.na_rep
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return formats.na_rep if math.isnan(value) else _number(value, formats.float_format)
    if isinstance(value, int):
        return format(value, formats.int_format)
    if isinstance(value, decimal.Decimal):
        return _number(value, formats.float_format)
    if isinstance(value, dt.datetime):
        return _datetime(value, formats)
    if isinstance(value, dt.date):
        return value.strftime(formats.date_format)
    if isinstance(value, list | dict | tuple):
        return json_text(value)
    return str(value)


_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")


@functools.lru_cache(maxsize=16)
def tzinfo_of(name: str) -> dt.tzinfo:
    """The ``tzinfo`` of an Arrow time zone: an IANA name (``Europe/Berlin``, ``UTC``) or a fixed
    offset (``+01:00``, which ``zoneinfo`` does not know).

    Raises:
        zoneinfo.ZoneInfoNotFoundError: neither.
    """
    found = _OFFSET.match(name)
    if found:
        sign, hours, minutes = found.groups()
        offset = dt.timedelta(hours=int(hours), minutes=int(minutes))
        return dt.timezone(-offset if sign == "-" else offset)
    return zoneinfo.ZoneInfo(name)


def _datetime(value: dt.datetime, formats: Formats) -> str:
    """A timestamp in ``datetime_format``; microseconds only when there are some (and the
    format ends in seconds); an aware one in ``formats.timezone`` (else its own zone) with its
    ISO 8601 offset, so the instant is never lost."""
    if value.tzinfo is not None and formats.timezone:
        value = value.astimezone(tzinfo_of(formats.timezone))
    fmt = formats.datetime_format
    text = value.strftime(fmt)
    if value.microsecond and fmt.endswith("%S"):
        text += f".{value.microsecond:06d}"
    if value.tzinfo is not None:
        offset = value.strftime("%z")  # +0100
        text += f"{offset[:3]}:{offset[3:]}"
    return text


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the last one "…" when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def column_kind(data_type: pa.DataType) -> str:
    """``number``, ``time`` (date, timestamp, time), ``bool`` or ``text`` (everything else,
    nested values included): how a column is aligned and whether its cells may wrap."""
    if pa.types.is_integer(data_type) or pa.types.is_floating(data_type) or pa.types.is_decimal(data_type):
        return "number"
    if pa.types.is_temporal(data_type):
        return "time"
    if pa.types.is_boolean(data_type):
        return "bool"
    return "text"


def has_fractions(column: pa.ChunkedArray) -> bool:
    """Whether some value of timestamp ``column`` has a fraction of a second (Arrow compute)."""
    return column.type.unit != "s" and bool(pc.any(pc.not_equal(pc.subsecond(column), 0)).as_py())


def zone_label(data_type: pa.DataType) -> str | None:
    """The zone a time-zone-aware timestamp column is shown in (``UTC``, ``Europe/Berlin``,
    ``+01:00``), else ``None``."""
    return data_type.tz if pa.types.is_timestamp(data_type) and data_type.tz else None


def in_zone(table: pa.Table, zone: str | None) -> pa.Table:
    """Time-zone-aware timestamp columns shown in ``zone`` (the instant is unchanged)."""
    if zone is None or not any(pa.types.is_timestamp(t) and t.tz and t.tz != zone for t in table.schema.types):
        return table  # nothing to convert (the common case: the data path put them in the zone already)
    columns = [c.cast(pa.timestamp(c.type.unit, tz=zone)) if pa.types.is_timestamp(c.type) and c.type.tz else c
               for c in table.columns]
    return pa.table(columns, names=table.column_names)


def _with_unit(text: str, unit: str | None) -> str:
    if not unit:
        return text
    return f"{text}{unit}" if unit in ("%", "‰") else f"{text} {unit}"


def column_formatter(data_type: pa.DataType, column: Column | None, formats: Formats) -> Callable[[Any], str]:
    """A function formatting one value of a column of ``data_type`` for display, by the
    column's presentation (``format``, ``unit``) and else ``formats``. A zoned timestamp is
    written as wall time in its zone without an offset (the header names the zone, see
    :func:`zone_label`).

    Raises:
        ValueError: a date pattern on a number column or a number format on a date column
            (names the column and both).
    """
    spec = column.format if column is not None else None
    kind = column.format_kind if column is not None else None
    unit = column.unit if column is not None else None
    data_kind = column_kind(data_type)
    if kind is not None and data_kind in ("number", "time") and (kind == "date") != (data_kind == "time"):
        what = "a date pattern" if kind == "date" else "a number format"
        raise ValueError(f"table.columns: format {spec!r} of column {column.name!r} is {what}, but the column holds "  # type: ignore[union-attr]
                         f"{'dates or times' if data_kind == 'time' else 'numbers'} ({data_type})")
    na = formats.na_rep
    if data_kind == "number" and (spec is not None or unit is not None):
        number_spec = spec or (formats.int_format if pa.types.is_integer(data_type) else formats.float_format)

        # A spec without a precision (",") shows a whole float (an integer column with a null, from
        # pandas) as the integer it is: 1,200, not 1,200.0.
        whole = not any(ch in number_spec for ch in ".eEfFgG%")
        try:
            format(1, number_spec)
            int_spec = True
        except ValueError:  # ".2": a precision an integer does not take; written as a float
            int_spec = False

        def number(value: Any) -> str:
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return na
            if whole and isinstance(value, float) and value.is_integer() and abs(value) < HUGE:
                value = int(value)
            if isinstance(value, int) and int_spec:
                return _with_unit(format(value, number_spec), unit)
            return _with_unit(_number(value if not isinstance(value, int) else float(value), number_spec), unit)
        return number
    if data_kind == "time" and (spec is not None or zone_label(data_type)):
        def when(value: Any) -> str:
            if value is None:
                return na
            if not isinstance(value, dt.date):
                return str(value)
            if isinstance(value, dt.datetime) and value.tzinfo is not None:
                value = value.astimezone(tzinfo_of(data_type.tz))
            fmt = spec or (formats.datetime_format if isinstance(value, dt.datetime) else formats.date_format)
            text = value.strftime(fmt)
            if spec is None and isinstance(value, dt.datetime) and value.microsecond and fmt.endswith("%S"):
                text += f".{value.microsecond:06d}"
            return text
        return when
    return lambda value: format_cell(value, formats)
