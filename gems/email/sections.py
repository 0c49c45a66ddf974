"""Several views in one message: the body's ``sections`` — part of the Email gem's properties
(:mod:`.properties` re-exports :class:`Section`).

As YAML::

    sections:
      - title: "Delays by carrier"
        table: {summary: {group_by: [carrier], aggregates: [{column: dep_delay, function: mean}]}}
        chart: {x: carrier, y: dep_delay_mean}
      - title: "The worst 10 flights"
        text: "Departure delay over two hours is marked."
        table: {columns: [carrier, flight, dep_delay], max_rows: 10}

Each section shows, in order, its title (a heading), its text (paragraphs), its chart and its
table, each made from the same rows (``from: in0``, the message's rows) or from the second
input's (``from: in1``). The default bodies show the sections in order instead of the
top-level table and chart; a custom body places them with ``{{ sections }}`` (HTML) and
``{{ sections_text }}`` (text).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .presentation import ChartOptions, InputName, TableOptions

__all__ = ["Section", "MAX_SECTIONS"]

# Each section's chart is an image drawn per message (~50 ms): a report of more views than this
# is several reports.
MAX_SECTIONS = 20


class Section(BaseModel):
    """One view of the message's rows: a title, a text, a table and a chart, each optional (at
    least one). ``table`` is :class:`TableOptions` (its own columns, labels, summary, totals,
    highlight, max_rows); ``table.max_html_bytes`` is not a section's: the budget is the whole
    body's, the top-level ``table.max_html_bytes``. ``chart`` is :class:`ChartOptions` over the
    section's summary when it has one, else over its rows."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    title: str | None = Field(default=None, min_length=1, max_length=1_000, description=(
        "Jinja2 template of the section's heading (one line)."))
    text: str | None = Field(default=None, min_length=1, description=(
        "Jinja2 template of plain text under the title: a blank line separates paragraphs (HTML-escaped in the HTML body)."))
    table: TableOptions | None = Field(default=None, description=(
        "The section's table, like the top-level table (columns, labels, summary, totals, highlight, max_rows); "
        "none when absent."))
    chart: ChartOptions | None = Field(default=None, description=(
        "The section's inline chart (its own image), over its table's summary when it has one, else over its rows."))
    from_: InputName = Field(default="in0", alias="from", description=(
        "Whose rows the section shows: in0 (the message's rows) or in1 (the second input's rows for this message)."))

    @model_validator(mode="after")
    def _something(self) -> Section:
        if self.title is None and self.text is None and self.table is None and self.chart is None:
            raise ValueError("a section shows something: give it a title, a text, a table or a chart")
        if self.table is not None and "max_html_bytes" in self.table.model_fields_set:
            raise ValueError("table.max_html_bytes is the budget of the whole HTML body: set it on the top-level "
                             "table, not in a section")
        return self
