"""The worksheets of an XLSX attachment (``sheets``) and the names Excel accepts — part of the
Email gem's properties (:mod:`.properties` re-exports :class:`Sheet`).

As YAML::

    attachments:
      - file_name: "delays-{{ run_date }}.xlsx"
        format: xlsx
        sheets:
          - {name: Summary, summary: {group_by: [carrier], aggregates: [{column: flight, function: count}]}}
          - {name: Detail, columns: [carrier, flight, dep_delay]}

Sheet names are checked when the properties are read (before anything runs), by Excel's rules
(Microsoft, "Rename a worksheet"): not empty, at most 31 characters, none of ``[ ] : * ? / \\``,
not beginning or ending with an apostrophe, not ``History`` (Excel keeps it for itself), and no
two the same, compared without case. Names are fixed text, not templates, so every message's
workbook passes these checks when the job is read.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .presentation import Column, ColumnChoice, Summary

__all__ = ["Sheet", "sheet_name_problem", "sheets_problem", "MAX_SHEET_NAME_CHARS", "FORBIDDEN_SHEET_CHARACTERS"]

MAX_SHEET_NAME_CHARS = 31
FORBIDDEN_SHEET_CHARACTERS = "[]:*?/\\"


def sheet_name_problem(name: str) -> str | None:
    """Why Excel refuses ``name`` as a worksheet name (a sentence naming the rule), or ``None``."""
    if not name.strip():
        return "a sheet name cannot be empty"
    if len(name) > MAX_SHEET_NAME_CHARS:
        return (f"sheet name {name!r} is {len(name)} characters; Excel allows at most {MAX_SHEET_NAME_CHARS}: "
                "shorten it")
    bad = [c for c in dict.fromkeys(name) if c in FORBIDDEN_SHEET_CHARACTERS]
    if bad:
        return (f"sheet name {name!r} contains {' '.join(bad)}; Excel sheet names cannot contain any of "
                f"{' '.join(FORBIDDEN_SHEET_CHARACTERS)}")
    if name.startswith("'") or name.endswith("'"):
        return f"sheet name {name!r} begins or ends with an apostrophe, which Excel does not allow: remove it"
    if name.lower() == "history":
        return f"sheet name {name!r} is reserved by Excel (its change history): choose another name"
    return None


def sheets_problem(names: Sequence[str]) -> str | None:
    """Why the sheet ``names`` of one workbook cannot be used together (a name given twice,
    compared without case, as Excel does), or ``None``."""
    seen: dict[str, str] = {}
    for name in names:
        if name.lower() in seen:
            return (f"sheet name {name!r} is given twice (as {seen[name.lower()]!r}); Excel compares sheet names "
                    "without case: make each name different")
        seen[name.lower()] = name
    return None


class Sheet(BaseModel, ColumnChoice):
    """One worksheet of an XLSX attachment: a ``summary`` of the rows (the same as
    ``table.summary``), or the rows themselves (``columns``, default: the attachment's
    ``columns``, else every column)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(description=("The worksheet's name: at most 31 characters, none of [ ] : * ? / \\, no apostrophe "
                                   "first or last, not History; unique without case in the workbook."))
    summary: Summary | None = Field(default=None, description="A grouped summary of the rows, like table.summary.")
    columns: list[str | Column] | None = Field(default=None, description=(
        "The detail rows' columns, in order: names, or {name, label, format, unit} (default: the attachment's columns, "
        "else all)."))

    @field_validator("name")
    @classmethod
    def _excel_name(cls, value: str) -> str:
        problem = sheet_name_problem(value)
        if problem:
            raise ValueError(problem)
        if "{{" in value or "{%" in value:  # a sheet name is the same in every message: checked once, here
            raise ValueError(f"sheet name {value!r} is a template; sheet names are fixed text (name the file after the "
                             "message instead: file_name is a template)")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Sheet:
        if self.summary is not None and self.columns is not None:
            raise ValueError(f"sheet {self.name!r} has both summary and columns: a sheet is a summary or detail rows; "
                             "list the summary's columns in summary.group_by and summary.aggregates")
        return self
