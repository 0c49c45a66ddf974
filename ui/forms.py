"""Form fields made from a pydantic model's JSON Schema, and a submitted form written back into
the round-trip YAML document.

The schema is ``Model.model_json_schema()`` (as ``mailgem schema`` prints it; for a fabric's
connection use :func:`connection_schema`, which adds the ``url``/``preset``/``region`` keys the
model accepts). Each field's ``path`` is its HTML input's ``name`` and its place in the YAML
document (``connections[0].host``, ``email.subject``), so a submitted form is applied with
:func:`mailgem.ui.yamlfile.set_path` (:func:`mailgem.ui.form_input.apply_form`) and a
``ValidationError`` maps back onto the same names (:func:`mailgem.ui.form_errors.validation_errors`).

Kinds: ``text``, ``textarea`` (templates, SQL, any value with a line break), ``integer``,
``number``, ``boolean`` (true, false, or absent: the default), ``select`` (an enum or Literal), ``list`` (a list of
scalars, one per line), ``secret`` (a secret reference: the field is ``...password.secret`` and
holds the secret's name, never a value) and ``yaml`` (anything else, edited as a YAML snippet:
lists of objects, mappings, unions of objects).
"""

from __future__ import annotations

import functools
import io
import re
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from ruamel.yaml import YAML

from mailgem.connections.errors import MailgemError

from .yamlfile import (
    PathPart,
    format_path,
    get_path,
    parse_path,
)

__all__ = [
    "FALSE_WORDS",
    "FieldError",
    "FieldKind",
    "FormErrors",
    "FormField",
    "TRUE_WORDS",
    "connection_schema",
    "form_fields",
    "show_scalar",
    "snippet_yaml",
]

FieldKind = Literal["text", "textarea", "integer", "number", "boolean", "select", "list", "secret", "yaml"]

# Nested objects deeper than this are edited as YAML snippets: a fieldset in a fieldset in a
# fieldset is as far as a form stays readable.
MAX_DEPTH: Final = 3

# String properties that hold templates or SQL: a textarea even when the value is one line.
# The schema cannot say this (a str is a str), so the names are listed here.
MULTILINE_KEYS: Final = frozenset({"transform", "sql", "text_body", "html_body"})

TRUE_WORDS: Final = frozenset({"on", "true", "1", "yes"})
FALSE_WORDS: Final = frozenset({"off", "false", "0", "no"})


class FieldError(MailgemError, ValueError):
    """One submitted field that cannot be written (``path``: the field, ``message``: why)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path, self.message = path, message


class FormErrors(MailgemError, ValueError):
    """A submitted form with wrong fields; nothing was written.

    Attributes:
        errors: ``{path: message}``, one per wrong field (an unknown path included).
    """

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{path}: {message}" for path, message in self.errors.items()))


@dataclass(frozen=True)
class FormField:
    """One input of a form.

    Attributes:
        path: the input's ``name`` and the value's place in the document (``email.subject``).
        label: the schema's title, else the key.
        description: the schema's description (help text), or ``None``.
        kind: how it is edited (see the module docstring).
        value: the current value as the input shows it ("" when absent; ``${ENV}`` verbatim,
            and then a text input whatever the kind: see :attr:`is_env`).
        default: the schema's default as text (a placeholder), or ``None``.
        required: the model needs it (within its group, when the group is there).
        choices: a select's values (the page adds an empty choice when the field is optional
            or has no value yet, so an absent optional group stays absent).
        group: the dotted parent path (a fieldset), "" for top-level fields.
        depth: how many groups deep (0: top level below the prefix).
    """

    path: str
    label: str
    description: str | None
    kind: FieldKind
    value: str
    default: str | None
    required: bool
    choices: tuple[str, ...] = ()
    group: str = ""
    depth: int = 0

    @property
    def is_env(self) -> bool:
        """Whether the value is an environment reference (``${NAME}``): shown and kept as text."""
        return "${" in self.value


# ---- schema ---------------------------------------------------------------------------------


@functools.cache  # made once (14-24 ms), then shared: callers read it, never change it
def connection_schema() -> dict[str, Any]:
    """The JSON Schema of a fabric's connection (``SmtpConnection``), with the keys the model
    takes before validation: ``url`` (``smtps://user@host:465/?timeout_s=30``, filling host,
    port, security and username), ``preset`` (a provider) and ``region`` (``ses`` only)."""
    from mailgem.connections.model import SmtpConnection
    from mailgem.connections.presets import PRESETS

    schema = SmtpConnection.model_json_schema()
    extra = {
        "url": {"type": "string", "title": "URL", "description": (
            "smtp://user@host:587 (STARTTLS), smtps://user@host:465 (implicit TLS) or smtp+insecure://host:25; "
            "query parameters set other fields. Fields given here win over it. Never put a password in it.")},
        "preset": {"enum": sorted(PRESETS), "type": "string", "title": "Preset",
                   "description": "A provider's host, port and security; fields given here win over it."},
        "region": {"type": "string", "title": "Region", "description": "The AWS region of preset ses, e.g. eu-west-1."},
    }
    # host and port are required by the model, but a url or preset gives them.
    schema["required"] = [k for k in schema.get("required", []) if k not in {"host", "port"}]
    properties = dict(schema["properties"])
    schema["properties"] = {"name": properties.pop("name"), **extra, **properties}
    return schema


@dataclass(frozen=True)
class _Node:
    """A property's schema with $ref and ``X | None`` resolved."""

    schema: dict[str, Any]
    nullable: bool
    ref: str | None  # the $defs name it came from


def _resolve(prop: Mapping[str, Any], root: Mapping[str, Any]) -> _Node:
    schema, nullable, ref = dict(prop), False, None
    for _ in range(32):  # $ref chains are short; a loop guard, not a limit users meet
        if "$ref" in schema:
            ref = schema["$ref"].rsplit("/", 1)[-1]
            target = root.get("$defs", {}).get(ref, {})
            # The property's own keys (description, default) win over the definition's.
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            continue
        branches = schema.get("anyOf")
        if branches is not None:
            rest = [b for b in branches if b.get("type") != "null"]
            if len(rest) == len(branches) or len(rest) != 1:
                nullable = nullable or len(rest) != len(branches)
                break
            nullable = True
            outer = {k: v for k, v in schema.items() if k != "anyOf"}
            schema = {**rest[0], **outer}
            continue
        break
    return _Node(schema, nullable, ref)


def _is_secret_ref(node: _Node) -> bool:
    props = node.schema.get("properties")
    return node.ref == "SecretRef" or (isinstance(props, Mapping) and list(props) == ["secret"])


def _is_scalar(schema: Mapping[str, Any]) -> bool:
    return "enum" in schema or "const" in schema or schema.get("type") in {"string", "integer", "number", "boolean"}


def _kind(key: str, node: _Node, value: Any, root: Mapping[str, Any]) -> FieldKind:
    s = node.schema
    if "enum" in s or "const" in s:
        return "select"
    kind = s.get("type")
    if kind == "boolean":
        return "boolean"
    if kind == "integer":
        return "integer"
    if kind == "number":
        return "number"
    if kind == "string":
        return "textarea" if key in MULTILINE_KEYS or (isinstance(value, str) and "\n" in value) else "text"
    if kind == "array" and isinstance(s.get("items"), Mapping) and _is_scalar(_resolve(s["items"], root).schema):
        return "list"
    return "yaml"


# ---- fields ---------------------------------------------------------------------------------


def form_fields(schema: Mapping[str, Any], doc: Any, prefix: str = "", *,
                only: Iterable[str] | None = None) -> list[FormField]:
    """The fields of the object ``schema`` describes, valued from ``doc`` at ``prefix``.

    ``doc`` is the whole round-trip document; ``prefix`` is where the object is in it
    (``connections[0]`` for a fabric's connection with :func:`connection_schema`, "" for a
    job with ``JobSpec``'s schema). Nested objects become grouped fields up to
    :data:`MAX_DEPTH`; a property absent from ``doc`` still gets its (empty) field. ``only``
    keeps the fields at or below these paths, relative to ``prefix`` (``["email"]``). Order is
    the schema's.

    Raises:
        ValueError: ``prefix`` is not a field path.
    """
    base = parse_path(prefix) if prefix else ()
    wanted = None if only is None else [parse_path(o) for o in only]
    out: list[FormField] = []
    _collect(schema, schema, doc, base, 0, True, out)
    if wanted is None:
        return out
    return [f for f in out if any(parse_path(f.path)[len(base):][: len(w)] == w for w in wanted)]


def _collect(obj: Mapping[str, Any], root: Mapping[str, Any], doc: Any, at: tuple[PathPart, ...],
             depth: int, present: bool, out: list[FormField]) -> None:
    """Append the fields of object schema ``obj`` at ``at``; ``present``: the object is in the
    document and required there (its required fields are then required)."""
    required = set(obj.get("required", ()))
    for key, prop in obj.get("properties", {}).items():
        path = (*at, key)
        node = _resolve(prop, root)
        value = get_path(doc, path, None)
        is_required = present and key in required and not node.nullable
        label = str(prop.get("title") or key)  # the property's title, not the definition's
        description = prop.get("description") or (node.schema.get("description") if node.ref is None else None)
        if _is_secret_ref(node):
            secret = value.get("secret") if isinstance(value, Mapping) else value
            out.append(FormField(format_path((*path, "secret")), label, description, "secret",
                                 show_scalar(secret), None, is_required, group=format_path(at), depth=depth))
            continue
        if node.schema.get("type") == "object" and "properties" in node.schema and depth < MAX_DEPTH \
                and (value is None or isinstance(value, Mapping)):
            _collect(node.schema, root, doc, path, depth + 1, is_required, out)
            continue
        kind = _kind(key, node, value, root)
        choices = tuple(show_scalar(c) for c in node.schema.get("enum", ()))
        if "const" in node.schema:
            choices = (show_scalar(node.schema["const"]),)
        default = _show_default(node.schema["default"], kind) if "default" in node.schema else None
        out.append(FormField(format_path(path), label, description, kind, _shown(value, kind), default,
                             is_required, choices, format_path(at), depth))


def show_scalar(value: Any) -> str:
    """A scalar as an input shows it: "" for none, true/false for booleans."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _shown(value: Any, kind: FieldKind) -> str:
    if value is None:
        return ""
    if kind == "list" and isinstance(value, list):
        return "\n".join(show_scalar(v) for v in value)
    if kind == "yaml":
        return _dump_snippet(value)
    if isinstance(value, (Mapping, list)):  # a shape the kind did not expect: show it as YAML
        return _dump_snippet(value)
    return show_scalar(value)


def _show_default(default: Any, kind: FieldKind) -> str | None:
    if default is None:
        return None
    if kind == "list" and isinstance(default, list):
        return "\n".join(show_scalar(v) for v in default)
    if isinstance(default, (Mapping, list)):
        return _dump_snippet(default) if default else None
    return show_scalar(default)


def snippet_yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 1 << 16
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _dump_snippet(value: Any) -> str:
    out = io.StringIO()
    snippet_yaml().dump(value, out)
    # A bare scalar is dumped as a document ending in "..."; the snippet is just the value.
    text = re.sub(r"\n\.\.\.\n\Z", "\n", out.getvalue())
    # A list is dumped indented as it would be under a key; the snippet starts at column 1.
    return textwrap.dedent(text).rstrip("\n")
