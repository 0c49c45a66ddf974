"""Form fields made from a pydantic model's JSON Schema, and a submitted form written back into
the round-trip YAML document.

The schema is ``Model.model_json_schema()`` (as ``mailgem schema`` prints it; for a fabric's
connection use :func:`connection_schema`, which adds the ``url``/``preset``/``region`` keys the
model accepts). Each field's ``path`` is its HTML input's ``name`` and its place in the YAML
document (``connections[0].host``, ``email.subject``), so a submitted form is applied with
:func:`mailgem.ui.yamlfile.set_path` and a ``ValidationError`` maps back onto the same names
(:func:`validation_errors`).

Kinds: ``text``, ``textarea`` (templates, SQL, any value with a line break), ``integer``,
``number``, ``boolean`` (a checkbox), ``select`` (an enum or Literal), ``list`` (a list of
scalars, one per line), ``secret`` (a secret reference: the field is ``...password.secret`` and
holds the secret's name, never a value) and ``yaml`` (anything else, edited as a YAML snippet:
lists of objects, mappings, unions of objects).
"""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from mailgem.connections.errors import MailgemError

from .yamlfile import (
    MISSING,
    PathPart,
    delete_path,
    format_path,
    get_path,
    parse_path,
    set_path,
)

__all__ = [
    "FIELDS_KEY",
    "FieldError",
    "FieldKind",
    "FormErrors",
    "FormField",
    "apply_form",
    "connection_schema",
    "form_fields",
    "validation_errors",
]

FieldKind = Literal["text", "textarea", "integer", "number", "boolean", "select", "list", "secret", "yaml"]

# The name of the hidden inputs listing the fields a page rendered (one per field, value = the
# path): an unchecked checkbox sends nothing, so this is how an absent checkbox means false.
FIELDS_KEY: Final = "_fields"

# Nested objects deeper than this are edited as YAML snippets: a fieldset in a fieldset in a
# fieldset is as far as a form stays readable.
MAX_DEPTH: Final = 3

# String properties that hold templates or SQL: a textarea even when the value is one line.
# The schema cannot say this (a str is a str), so the names are listed here.
MULTILINE_KEYS: Final = frozenset({"transform", "sql", "text_body", "html_body"})

_TRUE: Final = frozenset({"on", "true", "1", "yes"})
_FALSE: Final = frozenset({"off", "false", "0", "no", ""})


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
                                 _show(secret), None, is_required, group=format_path(at), depth=depth))
            continue
        if node.schema.get("type") == "object" and "properties" in node.schema and depth < MAX_DEPTH \
                and (value is None or isinstance(value, Mapping)):
            _collect(node.schema, root, doc, path, depth + 1, is_required, out)
            continue
        kind = _kind(key, node, value, root)
        choices = tuple(_show(c) for c in node.schema.get("enum", ()))
        if "const" in node.schema:
            choices = (_show(node.schema["const"]),)
        default = _show_default(node.schema["default"], kind) if "default" in node.schema else None
        out.append(FormField(format_path(path), label, description, kind, _shown(value, kind), default,
                             is_required, choices, format_path(at), depth))


def _show(value: Any) -> str:
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
        return "\n".join(_show(v) for v in value)
    if kind == "yaml":
        return _dump_snippet(value)
    if isinstance(value, (Mapping, list)):  # a shape the kind did not expect: show it as YAML
        return _dump_snippet(value)
    return _show(value)


def _show_default(default: Any, kind: FieldKind) -> str | None:
    if default is None:
        return None
    if kind == "list" and isinstance(default, list):
        return "\n".join(_show(v) for v in default)
    if isinstance(default, (Mapping, list)):
        return _dump_snippet(default) if default else None
    return _show(default)


def _snippet_yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 1 << 16
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _dump_snippet(value: Any) -> str:
    out = io.StringIO()
    _snippet_yaml().dump(value, out)
    # A bare scalar is dumped as a document ending in "..."; the snippet is just the value.
    text = re.sub(r"\n\.\.\.\n\Z", "\n", out.getvalue())
    # A list is dumped indented as it would be under a key; the snippet starts at column 1.
    return textwrap.dedent(text).rstrip("\n")


# ---- applying a form ------------------------------------------------------------------------


def apply_form(doc: MutableMapping[str, Any], schema: Mapping[str, Any],
               form: Mapping[str, str] | Iterable[tuple[str, str]], prefix: str = "", *,
               rendered: Iterable[str] | None = None) -> list[str]:
    """Write the submitted ``form`` into the round-trip ``doc``; returns the changed paths.

    Rules: a field whose text equals what its input showed is not written (quotes, comments
    and style stay); an empty value removes the key (a removed group that is left empty goes
    too, so an emptied ``proxy`` is no ``proxy: {}``); integers, numbers and booleans are
    coerced and a select must be one of its choices, except a value with ``${`` (an
    environment reference), kept as text; a list splits lines, strips them and drops empty
    ones; a YAML snippet is parsed. Checkboxes: a boolean field listed in ``rendered`` (or in
    the form's :data:`FIELDS_KEY` inputs) but not submitted is false; one in neither is left
    alone. A boolean equal to its default where the document has no key is not written. Keys
    starting with ``_`` are the page's own (a digest, :data:`FIELDS_KEY`) and are skipped.

    Raises:
        FormErrors: an unknown path, a value that cannot be coerced, a bad choice or a YAML
            snippet that does not parse (every field is checked first; then ``doc`` is untouched).
    """
    pairs = list(form.items()) if isinstance(form, Mapping) else list(form)
    fields = {f.path: f for f in form_fields(schema, doc, prefix)}
    submitted: dict[str, str] = {}
    shown = set(rendered or ())
    for key, text in pairs:
        if key == FIELDS_KEY:
            shown.add(text)
        elif not key.startswith("_"):
            submitted[key] = text
    for path in shown:
        field = fields.get(path)
        if field is not None and field.kind == "boolean" and path not in submitted:
            submitted[path] = "false"

    errors: dict[str, str] = {}
    writes: list[tuple[FormField, Any]] = []  # (field, value or MISSING to delete)
    for path, text in submitted.items():
        field = fields.get(path)
        if field is None:
            errors[path] = "no such field here (not a property of this form's model)"
            continue
        try:
            change = _parse(field, text)
        except FieldError as exc:
            errors[path] = exc.message
            continue
        if change is not _UNCHANGED:
            writes.append((field, change))
    if errors:
        raise FormErrors(errors)

    changed: list[str] = []
    for field, value in writes:
        if _write(doc, field, value):
            changed.append(field.path)
    return changed


class _Unchanged:
    """The type of :data:`_UNCHANGED`."""


_UNCHANGED: Final = _Unchanged()


def _normal(text: str) -> str:
    # Browsers send textarea lines with CRLF; a trailing line break is not a change worth
    # rewriting a block scalar for (``|`` vs ``|-``).
    return text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")


def _parse(field: FormField, text: str) -> Any:
    """The value to write for ``text``: ``_UNCHANGED``, ``MISSING`` (delete) or a value.

    Raises:
        FieldError: the text is not a value of this field's kind.
    """
    if field.kind == "boolean":
        if field.is_env and _normal(text) == field.value:
            return _UNCHANGED
        if "${" in text:
            return text
        lowered = text.strip().lower()
        if lowered not in _TRUE | _FALSE:
            raise FieldError(field.path, "must be true or false")
        flag = lowered in _TRUE
        # Absent, the default holds: writing it would add a key (and maybe its group) for nothing.
        if _show(flag) == (field.value or field.default or "false"):
            return _UNCHANGED
        return flag
    text = _normal(text)
    if text == _normal(field.value):
        return _UNCHANGED
    if not text.strip():
        return MISSING
    if "${" in text and field.kind in {"integer", "number", "select", "text", "secret"}:
        return text.strip()
    if field.kind == "integer":
        try:
            return int(text.strip().replace("_", ""))
        except ValueError:
            raise FieldError(field.path, "must be a whole number") from None
    if field.kind == "number":
        try:
            number = float(text.strip().replace("_", ""))
        except ValueError:
            raise FieldError(field.path, "must be a number") from None
        return int(number) if re.fullmatch(r"-?\d+", text.strip()) else number
    if field.kind == "select":
        if text.strip() not in field.choices:
            raise FieldError(field.path, "must be one of " + ", ".join(field.choices))
        return text.strip()
    if field.kind == "list":
        items = [line.strip() for line in text.split("\n") if line.strip()]
        return items if items else MISSING
    if field.kind == "yaml":
        try:
            return _snippet_yaml().load(text)
        except YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or "not valid YAML"
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            raise FieldError(field.path, f"{where}{problem}") from None
    if field.kind == "secret":
        return text.strip()
    return text  # text, textarea: as typed


def _write(doc: MutableMapping[str, Any], field: FormField, value: Any) -> bool:
    parts = parse_path(field.path)
    if field.kind == "secret":
        parts = parts[:-1]  # the reference itself: {secret: NAME}
        if value is not MISSING:
            old = get_path(doc, parts, None)
            if isinstance(old, Mapping):
                return set_path(doc, (*parts, "secret"), value)
            ref = CommentedMap(secret=value)
            ref.fa.set_flow_style()  # as the examples write it: password: {secret: NAME}
            value = ref
    if value is MISSING:
        removed = delete_path(doc, parts)
        _prune(doc, parts[:-1])
        return removed
    if isinstance(value, list) and not isinstance(value, CommentedSeq):
        old = get_path(doc, parts, None)
        seq = CommentedSeq(value)
        if isinstance(old, CommentedSeq) and old.fa.flow_style():
            seq.fa.set_flow_style()  # members: [alice, bob] stays on one line
        if old == value:
            return False
        value = seq
    return set_path(doc, parts, value)


def _prune(doc: MutableMapping[str, Any], parts: tuple[PathPart, ...]) -> None:
    """Remove mappings left empty at ``parts`` and above (``proxy: {}`` is not ``no proxy``)."""
    while parts and isinstance(parts[-1], str):
        node = get_path(doc, parts, None)
        if not isinstance(node, Mapping) or node:
            return
        delete_path(doc, parts)
        parts = parts[:-1]


# ---- validation errors ----------------------------------------------------------------------

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
