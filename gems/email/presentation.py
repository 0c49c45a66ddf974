"""How the report presents its data: the body table (columns with labels, formats and units,
a summary, totals, highlights), cell formats and the chart — part of the Email gem's
properties (:mod:`.properties` re-exports every name)."""

from __future__ import annotations

import decimal
import math
import re
from typing import TYPE_CHECKING, Literal

import zoneinfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["InputName", "Aggregate", "Summary", "Formats", "Column", "ColumnChoice", "Highlight", "TotalFunction", "HIGHLIGHT_STYLES",
           "TableOptions", "ChartOptions"]

_MODEL = ConfigDict(frozen=True, extra="forbid")


class Aggregate(BaseModel):
    """One summary column: ``function`` of ``column`` named ``name`` (default ``<column>_<function>``)."""

    model_config = _MODEL
    column: str
    function: Literal["count", "sum", "mean", "min", "max", "count_distinct"] = "count"
    name: str | None = None

    @property
    def output_name(self) -> str:
        return self.name or f"{self.column}_{self.function}"


class Summary(BaseModel):
    """A grouped summary shown as the body table instead of the first rows.

    ``order_by`` names output columns; prefix ``-`` for descending.
    """

    model_config = _MODEL
    group_by: list[str] = Field(min_length=1)
    aggregates: list[Aggregate] = Field(min_length=1)
    order_by: list[str] = Field(default_factory=list)


class Formats(BaseModel):
    """How cells are shown in the body table (the CSV attachment keeps raw values).

    Number formats are Python format specs (``",.2f"`` → ``1,234.50``); date formats are
    ``strftime`` patterns. NaN, None and NaT show as ``na_rep``.
    """

    model_config = _MODEL
    float_format: str = ",.2f"
    int_format: str = ","
    date_format: str = "%Y-%m-%d"
    datetime_format: str = "%Y-%m-%d %H:%M:%S"
    na_rep: str = Field(default="", max_length=100, description=(
        "How a null shows in the body's tables and in templates; a null group key shows as na_rep, or as "
        "'(null)' when na_rep is empty, so a subject or file name never loses it."))
    timezone: str | None = Field(default=None, description=(
        "IANA zone (e.g. Europe/Berlin) to show time-zone-aware timestamps in, everywhere: tables (the zone in the "
        "column header), CSV (with the ISO 8601 offset), XLSX (wall time, the zone in the header), Parquet. By default "
        "a pandas column keeps its own zone and a Spark TIMESTAMP shows in the Spark session's zone."))

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
                raise ValueError(f"unknown time zone {value!r}: use an IANA name like Europe/Berlin or UTC") from None
        return value


_ALIGN = Literal["left", "right", "center"]


def _format_kind(spec: str) -> str:
    """``"date"`` for a strftime pattern (``%d %b %Y``), ``"number"`` for a Python format spec
    (``,.1f``, ``.1%``, ``,``).

    Raises:
        ValueError: neither (a sentence naming both forms).
    """
    if re.search(r"%[a-zA-Z]", spec):
        return "date"
    try:
        format(1234.5, spec)
        format(decimal.Decimal("1234.5"), spec)
    except (ValueError, TypeError):
        raise ValueError(f"format {spec!r} is neither a number format (a Python format spec such as ',.1f', '.1%' "
                         "or ',') nor a date pattern (strftime, such as '%d %b %Y')") from None
    return "number"


class Column(BaseModel):
    """How one column is presented in the body's tables, the chart's axes and (with an
    attachment's ``labels: true``, the default) the CSV and XLSX headers.

    ``format`` is a Python format spec for numbers (``",.1f"`` → ``1,234.5``; ``".1%"`` →
    ``12.5%``, the value times 100) or a ``strftime`` pattern for dates and timestamps
    (``"%d %b %Y %H:%M"``); ``unit`` is written after each number (``"min"`` → ``12.5 min``);
    ``align`` overrides the default (numbers right, everything else left).
    """

    model_config = _MODEL
    name: str = Field(min_length=1, description="The column (of the frame, or of table.summary's output).")
    label: str | None = Field(default=None, min_length=1, max_length=200, description=(
        "What readers see instead of the column name (table headers, chart axes, CSV/XLSX headers)."))
    format: str | None = Field(default=None, min_length=1, max_length=100, description=(
        "Number format (Python format spec: ',.1f', '.1%', ',') or date pattern (strftime: '%d %b %Y %H:%M')."))
    unit: str | None = Field(default=None, min_length=1, max_length=20, description="Written after each number, e.g. min, USD, kg.")
    align: _ALIGN | None = Field(default=None, description="left, right or center (default: numbers right, others left).")

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        if value is not None:
            _format_kind(value)
        return value

    @property
    def format_kind(self) -> str | None:
        """``"number"``, ``"date"`` or ``None`` (no format)."""
        return None if self.format is None else _format_kind(self.format)

    @property
    def heading(self) -> str:
        """The label, else the name."""
        return self.label or self.name


# Which of the gem's inputs a part of the message shows (a property named ``from`` in YAML):
# ``in0`` (the frame that makes the messages) or ``in1`` (the second input: ``apply(spark, in0, in1)``).
InputName = Literal["in0", "in1"]

TotalFunction = Literal["sum", "mean", "count"]
# A highlight's style: its text marker (so it never rests on colour alone, WCAG 1.4.1) and its word.
HIGHLIGHT_STYLES: dict[str, tuple[str, str]] = {"warn": ("▲", "warning"), "bad": ("✖", "bad"), "good": ("✔", "good")}
_WHEN = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(.+?)\s*$")


class Highlight(BaseModel):
    """Emphasis for the cells of ``column`` whose value satisfies ``when``: a comparison with a
    number (``"> 100"``, ``"<= 0.5"``, ``"== 0"``) or with text (``'== "FAILED"'``). The cell
    gets a background, bold text and a marker (``▲`` warn, ``✖`` bad, ``✔`` good), explained
    under the table, so the emphasis does not rely on colour alone."""

    model_config = _MODEL
    column: str = Field(min_length=1)
    when: str = Field(min_length=2, max_length=200, description='A comparison: "> 100", "<= 0.5", \'== "FAILED"\'.')
    style: Literal["warn", "bad", "good"] = "warn"

    @field_validator("when")
    @classmethod
    def _comparison(cls, value: str) -> str:
        cls.parse(value)
        return value

    @staticmethod
    def parse(when: str) -> tuple[str, float | str]:
        """``(operator, operand)`` of a ``when`` text: a number, or a quoted text.

        Raises:
            ValueError: not ``<operator> <number or "text">`` (a sentence with examples).
        """
        match = _WHEN.match(when)
        if match:
            op, operand = match.groups()
            if len(operand) >= 2 and operand[0] == operand[-1] and operand[0] in "\"'":
                return op, operand[1:-1]
            try:
                number = float(operand.replace("_", ""))
            except ValueError:
                pass
            else:
                if math.isfinite(number):
                    return op, number
        raise ValueError(f"when {when!r} is not a comparison: write an operator (>, >=, <, <=, ==, !=) and a number "
                         "or a quoted text, e.g. \"> 100\" or '== \"FAILED\"'")

    @property
    def label(self) -> str:
        """The style's marker and word: ``▲ warning``."""
        marker, word = HIGHLIGHT_STYLES[self.style]
        return f"{marker} {word}"


class ColumnChoice:
    """What a model with a ``columns`` option (names, or :class:`Column` objects) offers: the
    table's and each attachment's."""

    if TYPE_CHECKING:
        columns: list[str | Column] | None

    @property
    def column_names(self) -> list[str] | None:
        """The names of ``columns`` (``None``: every column)."""
        return None if self.columns is None else [c if isinstance(c, str) else c.name for c in self.columns]

    @property
    def presentation(self) -> dict[str, Column]:
        """``{name: Column}`` for the columns given as objects (labels, formats, units, alignment)."""
        return {c.name: c for c in self.columns or [] if isinstance(c, Column)}


class TableOptions(BaseModel, ColumnChoice):
    """The HTML table in the body.

    ``columns`` lists the columns to show, as names or as :class:`Column` objects (label,
    format, unit, align); ``totals`` adds a totals row computed over all of the message's rows;
    ``highlight`` emphasises values past a threshold.

    ``max_html_bytes`` is the budget for the whole HTML body: Gmail clips messages over about
    102 KB, so rows are cut to fit with a "showing N of M rows" note.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    from_: InputName = Field(default="in0", alias="from", description=(
        "Which input's rows the table (and the chart) shows: in0 (the message's rows) or in1 (the second input's "
        "rows this message carries)."))
    enabled: bool = True
    columns: list[str | Column] | None = Field(default=None, description=(
        "Columns to show, in order: names, or {name, label, format, unit, align}."))
    max_rows: int = Field(default=100, ge=1, le=10_000)
    max_html_bytes: int = Field(default=90_000, ge=2_000, le=10 * 1024 * 1024)
    max_cell_chars: int = Field(default=200, ge=10, le=100_000, description=(
        "Longer cells are cut with '…' in the body's tables (the attachment keeps the whole value)."))
    summary: Summary | None = None
    totals: dict[str, TotalFunction] = Field(default_factory=dict, description=(
        "A totals row under the table: {column: sum | mean | count}, over all of the message's rows."))
    highlight: list[Highlight] = Field(default_factory=list, description=(
        'Emphasis for values past a threshold: [{column, when: "> 100", style: warn | bad | good}].'))

    def labels(self) -> dict[str, str]:
        """``{name: label}`` of the columns that have a label."""
        return {name: c.label for name, c in self.presentation.items() if c.label}

    @model_validator(mode="after")
    def _unique(self) -> TableOptions:
        names = self.column_names or []
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"table.columns lists {', '.join(map(repr, twice))} more than once: list each column once")
        if self.column_names is not None:
            for option, used in (("totals", list(self.totals)), ("highlight", [h.column for h in self.highlight])):
                missing = [n for n in dict.fromkeys(used) if n not in names]
                if missing:
                    raise ValueError(f"table.{option} names {', '.join(map(repr, missing))}, not one of table.columns "
                                     f"({', '.join(names)}): add it to table.columns, or use a column the table shows")
        return self


class ChartOptions(BaseModel):
    """An inline chart of the frame (or of ``table.summary`` when set), in the HTML body as a PNG
    with a ``cid:`` reference (no remote images), described in words in the text part.

    ``y`` is one column or several (one series each); ``top_n`` keeps the N rows with the
    largest first ``y`` (bar charts: largest first).
    """

    model_config = _MODEL
    kind: Literal["bar", "line"] = "bar"
    x: str
    y: str | list[str]
    title: str | None = None
    top_n: int | None = Field(default=None, ge=1, le=1_000)

    @property
    def y_columns(self) -> list[str]:
        return [self.y] if isinstance(self.y, str) else list(self.y)
