"""A submitted form written back into the round-trip YAML document it was made from
(:func:`apply_form`): only what changed, coerced to each field's kind, every field checked before
anything is written."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Final

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from .forms import FALSE_WORDS, TRUE_WORDS, FieldError, FormErrors, FormField, form_fields, show_scalar, snippet_yaml
from .yamlfile import MISSING, PathPart, delete_path, get_path, parse_path, set_path

__all__ = ["apply_form"]


def apply_form(doc: MutableMapping[str, Any], schema: Mapping[str, Any],
               form: Mapping[str, str] | Iterable[tuple[str, str]], prefix: str = "") -> list[str]:
    """Write the submitted ``form`` into the round-trip ``doc``; returns the changed paths.

    Rules: a field whose text equals what its input showed is not written (quotes, comments
    and style stay); an empty value removes the key (a removed group that is left empty goes
    too, so an emptied ``proxy`` is no ``proxy: {}``); integers, numbers and booleans are
    coerced and a select must be one of its choices, except a value with ``${`` (an
    environment reference), kept as text; a list splits lines, strips them and drops empty
    ones; a YAML snippet is parsed. A boolean is ``true``, ``false`` or empty (the default: no
    key), and one equal to its default where the document has no key is not written. A field
    not submitted is left alone. Keys starting with ``_`` are the page's own (a digest, the
    mode) and are skipped.

    Raises:
        FormErrors: an unknown path, a value that cannot be coerced, a bad choice or a YAML
            snippet that does not parse (every field is checked first; then ``doc`` is untouched).
    """
    pairs = list(form.items()) if isinstance(form, Mapping) else list(form)
    fields = {f.path: f for f in form_fields(schema, doc, prefix)}
    submitted = {key: text for key, text in pairs if not key.startswith("_")}

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
        if not text.strip():  # the page's "(default)" choice: no key, the default holds
            return _UNCHANGED if not field.value else MISSING
        lowered = text.strip().lower()
        if lowered not in TRUE_WORDS | FALSE_WORDS:
            raise FieldError(field.path, "must be true or false")
        flag = lowered in TRUE_WORDS
        # Absent, the default holds: writing it would add a key (and maybe its group) for nothing.
        if show_scalar(flag) == (field.value or field.default or "false"):
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
            return snippet_yaml().load(text)
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


