"""A pydantic ``ValidationError`` mapped onto a form's field names (``connections[0].port``),
so each message shows at its input."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pydantic import ValidationError

from .yamlfile import PathPart, format_path, parse_path

__all__ = ["validation_errors"]

# Names pydantic gives the members of a plain union in an error's location.
_MEMBER_NAMES: Final = frozenset({"str", "int", "float", "bool", "none", "list", "dict", "tuple"})


def validation_errors(exc: ValidationError, prefix: str = "", *,
                      schema: Mapping[str, Any] | None = None) -> dict[str, str]:
    """``{form path: message}`` from a pydantic error, for the fields of a form at ``prefix``.

    A model-wide error (a rule over several fields) is at ``prefix`` itself ("" at the top).
    With ``schema`` (the one the form was made from), an error about a secret reference is at
    its input (``password.secret``) and a discriminated union's tag (``secrets.encrypted_file``,
    which looks like a key) is left out; pass it whenever the caller has it.
    Union members pydantic names in a location (``chart.y.str``, ``secrets.encrypted_file``)
    are left out: with ``schema`` by walking it (a part that is no property where the schema
    has a union is the member's tag), without it by their shape (``list[str]``, a class name,
    a type name). Messages never include the input; several about one field are joined.
    """
    base = parse_path(prefix) if prefix else ()
    found: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = tuple(error["loc"])
        parts = _schema_path(loc, schema) if schema is not None else _shape_path(loc)
        path = format_path((*base, *parts))
        message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        messages = found.setdefault(path, [])
        if message not in messages:
            messages.append(message)
    return {path: "; ".join(messages) for path, messages in found.items()}


def _shape_path(loc: tuple[Any, ...]) -> tuple[PathPart, ...]:
    return tuple(p for p in loc if isinstance(p, int) or not _names_member(str(p)))


def _names_member(part: str) -> bool:
    return ("[" in part or part in _MEMBER_NAMES or part[:1].isupper()
            or part.startswith(("function-", "lax-", "json-or-python")))


def _schema_path(loc: tuple[Any, ...], root: Mapping[str, Any]) -> tuple[PathPart, ...]:
    out: list[PathPart] = []
    nodes: list[Mapping[str, Any]] = [root]  # the schemas the value at ``out`` may follow
    for part in loc:
        nodes = [n for node in nodes for n in _branches(node, root)]
        if isinstance(part, int):
            out.append(part)
            nodes = [n["items"] for n in nodes if isinstance(n.get("items"), Mapping)]
            continue
        owners = [n for n in nodes if part in n.get("properties", {})]
        if owners:
            out.append(part)
            nodes = [n["properties"][part] for n in owners]
        elif any(isinstance(n.get("additionalProperties"), Mapping) or n.get("additionalProperties") is True
                 for n in nodes):
            out.append(part)  # a key of a mapping (headers, params)
            nodes = [n["additionalProperties"] for n in nodes if isinstance(n.get("additionalProperties"), Mapping)]
        elif len(nodes) > 1 or not nodes:
            # A union member's tag: keep the branches it may name (discriminator value or title).
            named = [n for n in nodes if _tagged(n, part)]
            nodes = named or nodes
        else:
            out.append(part)  # a key the schema does not know (an extra key pydantic refused)
            nodes = []
    # A secret reference's input is its ``.secret`` (``password.secret``): put the error there.
    ends = [n for node in nodes for n in _branches(node, root)]
    if ends and all(list(n.get("properties", {})) == ["secret"] for n in ends):
        out.append("secret")
    return tuple(out)


def _branches(node: Mapping[str, Any], root: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The schemas ``node`` may be: itself with $ref followed, or each member of a union."""
    if "$ref" in node:
        return _branches(root.get("$defs", {}).get(node["$ref"].rsplit("/", 1)[-1], {}), root)
    members = node.get("anyOf") or node.get("oneOf")
    if members:
        return [b for m in members for b in _branches(m, root) if b.get("type") != "null"]
    return [node]


def _tagged(node: Mapping[str, Any], tag: str) -> bool:
    if node.get("title") == tag:
        return True
    return any(p.get("const") == tag or p.get("enum") == [tag] for p in node.get("properties", {}).values())
