"""Who one email goes to: the ``to``, ``cc`` and ``bcc`` addresses as written, rendered from
templates, and read from recipient columns, parsed and checked (email-validator, no DNS lookups)."""

from __future__ import annotations

from typing import Any

from mailgem.connections.addresses import AddressError, Mailbox, parse_mailbox

from ..properties import EmailProperties, split_addresses
from ..validate import is_template
from .checks import RecipientError
from .render import nulls_refused, render
from .unit import Envelope, Unit

__all__ = ["envelope_of"]


def _address_items(props: EmailProperties, field_name: str, column: str | None, ctx: dict[str, Any],
                   unit: Unit) -> list[tuple[str, str]]:
    """``(where it came from, item)`` for each address of one field, in order."""
    out: list[tuple[str, str]] = []
    for i, item in enumerate(getattr(props, field_name)):
        if not is_template(item):
            out.append((f"{field_name}[{i}]", item))
            continue
        rendered = render(f"{field_name}[{i}]", item, nulls_refused(ctx))
        try:
            out += [(f"{field_name}[{i}] (template)", a) for a in split_addresses(rendered)]
        except ValueError as exc:
            raise RecipientError(f"{field_name}[{i}] (template): {exc}") from None
    if column:
        row = unit.extra.get("row")  # per_row: the row is already Python values
        column_values = [row[column]] if row is not None else unit.table.column(column).to_pylist()
        values = [str(v) for v in dict.fromkeys(column_values) if v not in (None, "")]
        try:
            out += [(f"{field_name}_column {column!r}", a) for a in split_addresses(values)]
        except ValueError as exc:
            raise RecipientError(f"{field_name}_column {column!r}: {exc}") from None
    return out


def envelope_of(props: EmailProperties, unit: Unit, ctx: dict[str, Any],
                special_domains: tuple[str, ...] = ()) -> Envelope:
    """Recipients of ``unit``: static addresses, rendered templates (with ``ctx``, the unit's
    template context) and column values.

    Non-ASCII domains become IDNA A-labels; a non-ASCII local part marks the message as needing
    SMTPUTF8 (RFC 6531). ``special_domains``: the connection's ``allowed_special_domains``.

    Raises:
        RecipientError: an address from data is invalid (email-validator, no DNS lookups); the
            message names the field, template or column it came from.
    """
    boxes: dict[str, list[Mailbox]] = {}
    problems: list[str] = []
    for field_name, column in (("to", props.to_column), ("cc", props.cc_column), ("bcc", props.bcc_column)):
        boxes[field_name] = []
        for source, item in _address_items(props, field_name, column, ctx, unit):
            try:
                boxes[field_name].append(parse_mailbox(item, special_domains))
            except AddressError as exc:
                problems.append(f"{source}: {exc}")
    if problems:
        raise RecipientError("invalid recipient: " + "; ".join(problems))
    env = Envelope.of(boxes["to"], boxes["cc"], boxes["bcc"])
    if not env.recipients:
        raise RecipientError("no recipients for this message (empty recipient column or template)")
    return env
