"""Checks of the second input's properties before a run: ``slice_by``'s columns, and what needs
an ``in1`` when there is none (see :mod:`.in1`)."""

from __future__ import annotations

from collections.abc import Iterator

from ..properties import EmailProperties

__all__ = ["in1_problems", "in1_uses"]


def in1_uses(props: EmailProperties) -> list[str]:
    """The properties that need a second input: ``slice_by``, ``table.from``, ``sections[i].from``,
    ``attachments[i].from``."""
    uses = ["slice_by"] if props.slice_by else []
    if props.table.from_ == "in1":
        uses.append("table.from")
    uses += [f"sections[{i}].from" for i, s in enumerate(props.sections) if s.from_ == "in1"]
    return uses + [f"attachments[{i}].from" for i, a in enumerate(props.attachments) if a.from_ == "in1"]


def in1_problems(props: EmailProperties, columns: list[str] | None, in1_columns: list[str] | None,
                 has_in1: bool | None) -> Iterator[tuple[str, str]]:
    """``(path, message)`` for each problem of ``slice_by`` and the ``from: in1`` parts.

    Args:
        columns: ``in0``'s column names, ``None`` when unknown.
        in1_columns: ``in1``'s, ``None`` when unknown.
        has_in1: whether a second input is given (``None``: unknown).
    """
    if has_in1 is False:
        for path in in1_uses(props):
            yield path, ("uses the second input (in1), and there is none: name two sources in the job file "
                         "(sources: {recipients: {...}, data: {...}}; the first drives the messages, the second is in1) "
                         "or pass apply(spark, in0, in1); else remove it" if path == "slice_by" else
                         "is in1, and there is no second input: name two sources in the job file (sources: {recipients: "
                         "{...}, data: {...}}) or pass apply(spark, in0, in1); else set it to in0 or remove it")
    for in0_column, in1_column in (props.slice_by or {}).items():
        if columns is not None and in0_column not in columns:
            yield (f"slice_by.{in0_column}", f"{in0_column!r} is not a column of in0 (the frame that makes the messages; "
                                             f"it has: {', '.join(columns)}): the keys are written in0_column: in1_column")
        if in1_columns is not None and in1_column not in in1_columns:
            yield (f"slice_by.{in0_column}", f"{in1_column!r} is not a column of in1 (it has: {', '.join(in1_columns)}): "
                                             "the keys are written in0_column: in1_column")
