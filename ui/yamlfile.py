"""A YAML file edited in place: comments, order, quoting and indentation kept; a save refused
when the file changed on disk since the page was built.

The document is the file as written (round trip, ruamel.yaml), never the interpolated one: a
``port: ${SMTP_PORT}`` stays the string ``"${SMTP_PORT}"`` and is written back unchanged.

Paths name a value the way the UI's form fields do: ``email.subject``, ``connections[0].host``,
``email.table.columns[1].label`` (see :func:`parse_path`).
"""

from __future__ import annotations

import difflib
import enum
import hashlib
import io
import os
import re
import stat
import tempfile
from collections.abc import Mapping, MutableMapping, MutableSequence
from pathlib import Path
from typing import Any, Final

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    SingleQuotedScalarString,
)
from ruamel.yaml.util import load_yaml_guess_indent

from mailgem.connections.errors import MailgemError

__all__ = [
    "MISSING",
    "ConflictError",
    "PathPart",
    "YamlFile",
    "YamlSyntaxError",
    "delete_path",
    "digest_of",
    "format_path",
    "get_path",
    "parse_path",
    "set_path",
]

PathPart = str | int

# Lines are never re-wrapped: a long Jinja subject must come back as it was written.
_WIDTH: Final = 1 << 16
# Indentation when a file gives no hint (no nested block): the examples' style.
_DEFAULT_MAPPING, _DEFAULT_SEQUENCE, _DEFAULT_OFFSET = 2, 4, 2


class _Missing(enum.Enum):
    """The type of :data:`MISSING` (an enum, so type checkers know it is one value)."""

    MISSING = "MISSING"


MISSING: Final = _Missing.MISSING


class YamlSyntaxError(MailgemError, ValueError):
    """Text that is not a YAML mapping.

    Attributes:
        line, column: 1-based position of the problem (``None`` when YAML gives none).
        problem: what is wrong, e.g. ``mapping values are not allowed here``.
    """

    def __init__(self, problem: str, line: int | None = None, column: int | None = None) -> None:
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(f"{where}{problem}")
        self.problem, self.line, self.column = problem, line, column


class ConflictError(MailgemError):
    """The file changed on disk since it was loaded, so saving would lose that change.

    Attributes:
        path: the file.
        diff: unified diff from the text that was loaded (``loaded``) to the text on disk
            (``on disk``); empty when the file was removed.
    """

    def __init__(self, path: Path, diff: str) -> None:
        super().__init__(f"{path} was changed by someone else since it was loaded; reload it, redo your edit "
                         "and save again (nothing was written)")
        self.path, self.diff = path, diff


def digest_of(text: str) -> str:
    """The sha256 hex digest of ``text`` as UTF-8 (what :attr:`YamlFile.digest` holds)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class YamlFile:
    """One YAML file on disk, loaded for a round trip.

    Attributes:
        path: the file.
        text: its text when loaded (or last saved by this object).
        digest: sha256 hex of ``text``'s bytes; a page sends it back with its edit.
        doc: the round-trip document (a ``CommentedMap``); edit it with :func:`set_path`.
    """

    def __init__(self, path: Path, text: str) -> None:
        """Parse ``text`` (read from ``path``); use :meth:`load` to read a file.

        Raises:
            YamlSyntaxError: ``text`` is not YAML, or its top level is not a mapping.
        """
        self.path = path
        self.text = text
        self.digest = digest_of(text)
        self._yaml = _round_trip_yaml()
        self._newline = "\r\n" if "\r\n" in text else "\n"
        # ruamel drops blank lines before the first node; they are part of the file's style.
        self._lead = text[: len(text) - len(text.lstrip("\r\n"))].replace("\r\n", "\n")
        # The indentation guess reads the text; the document comes from our configured loader.
        doc, sequence, offset = _guarded(lambda: load_yaml_guess_indent(text, yaml=self._yaml))
        if sequence is None or offset is None:
            mapping, sequence, offset = _DEFAULT_MAPPING, sequence or _DEFAULT_SEQUENCE, _DEFAULT_OFFSET
        else:
            # The guess gives the item's indent and the dash's offset; a nested mapping in these
            # files is indented as a list item's text is, past the dash.
            mapping = max(sequence - offset, 1)
        self._yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
        self.doc: CommentedMap = _mapping(doc)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> YamlFile:
        """Read ``path`` (UTF-8).

        Raises:
            OSError: the file cannot be read.
            YamlSyntaxError: it is not YAML, or its top level is not a mapping.
        """
        path = Path(path)
        return cls(path, path.read_bytes().decode("utf-8"))

    def copy(self) -> YamlFile:
        """This version again, to save from: a page's version stays as the page loaded it (its
        text is the left side of a later conflict's diff)."""
        return YamlFile(self.path, self.text)

    def dump(self, doc: Mapping[str, Any]) -> str:
        """``doc`` as text in this file's style (indentation, line breaks)."""
        out = io.StringIO()
        self._yaml.dump(doc, out)
        text = self._lead + out.getvalue()
        return text.replace("\n", self._newline) if self._newline != "\n" else text

    def parse(self, text: str) -> CommentedMap:
        """A round-trip document from ``text`` (the raw-YAML editor's content).

        Raises:
            YamlSyntaxError: not YAML (with line and column), or the top level is not a mapping.
        """
        return _mapping(_guarded(lambda: self._yaml.load(text)))

    def check_unchanged(self, expected_digest: str, *, loaded_text: str | None = None) -> None:
        """Nothing to do when the file on disk still has ``expected_digest`` (checked before
        anything else is done for a save, e.g. a secret stored).

        Raises:
            ConflictError: it changed (or was removed) since it was loaded; ``loaded_text``
                as in :meth:`save`.
        """
        try:
            on_disk: str | None = self.path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            on_disk = None
        if on_disk is None or digest_of(on_disk) != expected_digest:
            loaded = self.text if loaded_text is None else loaded_text
            diff = "" if on_disk is None else "".join(difflib.unified_diff(
                loaded.splitlines(keepends=True), on_disk.splitlines(keepends=True),
                fromfile="loaded", tofile="on disk"))
            raise ConflictError(self.path, diff)

    def save(self, doc: Mapping[str, Any], expected_digest: str, *, loaded_text: str | None = None) -> str:
        """Write ``doc`` to the file, atomically, unless the file changed since it was loaded.

        ``expected_digest`` is the digest of the file the edit was made on (the page's); the
        file is written only when it still has it. ``loaded_text`` is that text, for the
        conflict's diff (default: :attr:`text`, when this object is the one the page was built
        from). Returns the new digest; :attr:`text` and :attr:`digest` then describe the file.

        Raises:
            ConflictError: the file on disk no longer has ``expected_digest`` (nothing written).
            OSError: the folder is not writable.
        """
        self.check_unchanged(expected_digest, loaded_text=loaded_text)
        text = self.dump(doc)
        _replace(self.path, text.encode("utf-8"))
        # Another writer between the check and os.replace would still be overwritten: this
        # guards a page left open, not two processes saving in the same millisecond.
        self.text, self.digest = text, digest_of(text)
        return self.digest


def _round_trip_yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = _WIDTH
    return yaml


def _guarded(load: Any) -> Any:
    """``load()``, with ruamel's errors made a :class:`YamlSyntaxError` (no traceback text)."""
    try:
        return load()
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "not valid YAML"
        if exc.context and exc.problem:
            problem = f"{exc.problem} ({exc.context})"
        raise YamlSyntaxError(problem, mark.line + 1 if mark else None, mark.column + 1 if mark else None) from None
    except YAMLError as exc:
        raise YamlSyntaxError(str(exc).strip() or "not valid YAML") from None


def _mapping(doc: Any) -> CommentedMap:
    if not isinstance(doc, CommentedMap):
        what = "empty" if doc is None else "a list" if isinstance(doc, list) else f"the value {str(doc)[:40]!r}"
        raise YamlSyntaxError(f"the document must be a mapping (key: value lines), not {what}", 1, 1)
    return doc


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``
    (atomic on one file system), keeping the file's permission bits."""
    mode = stat.S_IMODE(path.stat().st_mode)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- paths ---------------------------------------------------------------------------------

_KEY = r"[^.\[\]\s]+"
_SEGMENT = re.compile(rf"({_KEY})((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")


def parse_path(path: str) -> tuple[PathPart, ...]:
    """``("connections", 0, "host")`` from ``"connections[0].host"``.

    Raises:
        ValueError: an empty key, a bracket that is not ``[digits]``, or a stray dot.
    """
    parts: list[PathPart] = []
    for segment in path.split("."):
        match = _SEGMENT.fullmatch(segment)
        if match is None:
            raise ValueError(f"{path!r} is not a field path (e.g. email.subject, connections[0].host)")
        parts.append(match[1])
        parts.extend(int(i) for i in _INDEX.findall(match[2]))
    return tuple(parts)


def format_path(parts: tuple[PathPart, ...] | list[PathPart]) -> str:
    """The inverse of :func:`parse_path`."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def get_path(doc: Any, path: str | tuple[PathPart, ...], default: Any = MISSING) -> Any:
    """The value at ``path`` in ``doc``; ``default`` when any part is absent.

    Raises:
        KeyError: absent and no ``default`` given.
        ValueError: ``path`` is not a field path.
    """
    parts = parse_path(path) if isinstance(path, str) else path
    node = doc
    for part in parts:
        found, node = _child(node, part)
        if not found:
            if default is MISSING:
                raise KeyError(format_path(parts))
            return default
    return node


def _child(node: Any, part: PathPart) -> tuple[bool, Any]:
    if isinstance(part, int):
        if isinstance(node, MutableSequence) and 0 <= part < len(node):
            return True, node[part]
    elif isinstance(node, Mapping) and part in node:
        return True, node[part]
    return False, None


def set_path(doc: MutableMapping[str, Any], path: str | tuple[PathPart, ...], value: Any) -> bool:
    """Set the value at ``path``; returns whether the document changed.

    Missing mappings on the way are created (a list only at index 0 of a missing list); index
    ``len(list)`` appends. An existing key keeps its place and comments. A value equal to the
    one there is not written, so its quoting and style stay. A new multi-line string is written
    as a literal block (``|``); a string replacing a block scalar or a quoted string keeps that
    style.

    Raises:
        ValueError: a bad path, an index past the end of a list, or a part that goes through a
            value that is not a mapping or list.
    """
    parts = parse_path(path) if isinstance(path, str) else path
    if not parts:
        raise ValueError("an empty path names no field")
    node: Any = doc
    for i, part in enumerate(parts[:-1]):
        found, child = _child(node, part)
        if not found:
            child = CommentedSeq() if isinstance(parts[i + 1], int) else CommentedMap()
            _put(node, part, child, parts[: i + 1])
        node = child
    key = parts[-1]
    found, old = _child(node, key)
    if found and _same(old, value):
        return False
    _put(node, key, _styled(value, old if found else None), parts)
    return True


def delete_path(doc: MutableMapping[str, Any], path: str | tuple[PathPart, ...]) -> bool:
    """Remove the value at ``path``; returns whether there was one (absent is no error).

    Raises:
        ValueError: ``path`` is not a field path.
    """
    parts = parse_path(path) if isinstance(path, str) else path
    parent: Any = get_path(doc, parts[:-1], None) if len(parts) > 1 else doc
    found, _ = _child(parent, parts[-1])
    if found:
        del parent[parts[-1]]
    return found


def _put(node: Any, part: PathPart, value: Any, where: tuple[PathPart, ...]) -> None:
    if isinstance(part, int):
        if not isinstance(node, MutableSequence) or part > len(node):
            raise ValueError(f"{format_path(where)}: no such list item (a list can only grow by one item at its end)")
        if part == len(node):
            node.append(value)
        else:
            node[part] = value
    elif isinstance(node, MutableMapping):
        node[part] = value
    else:
        # ValueError, as for every other path that does not fit the document (one kind to catch).
        raise ValueError(f"{format_path(where[:-1])} is not a mapping, so it has no key {part!r}")  # noqa: TRY004


def _same(old: Any, new: Any) -> bool:
    # True == 1 in Python, not in YAML: a boolean replacing a number is a change.
    if isinstance(old, bool) != isinstance(new, bool):
        return False
    return _plain(old, new) and bool(old == new)


def _plain(old: Any, new: Any) -> bool:
    """Whether ``old`` and ``new`` are comparable for :func:`_same`: scalars of one family or
    two containers (a string never equals a list, a mapping never a list)."""
    families = ((str,), (bool,), (int, float), (Mapping,), (list, tuple))
    return any(isinstance(old, f) and isinstance(new, f) for f in families) or (old is None and new is None)


_STRING_STYLES = (LiteralScalarString, FoldedScalarString, DoubleQuotedScalarString, SingleQuotedScalarString)


def _styled(value: Any, old: Any) -> Any:
    """``value`` in the style of the ``old`` string it replaces; a multi-line string as ``|``."""
    if not isinstance(value, str) or isinstance(value, _STRING_STYLES):
        return value
    for style in (LiteralScalarString, FoldedScalarString):
        if isinstance(old, style):
            return style(value)
    if "\n" in value:
        return LiteralScalarString(value)
    for style in (DoubleQuotedScalarString, SingleQuotedScalarString):
        if isinstance(old, style):
            return style(value)
    return value
