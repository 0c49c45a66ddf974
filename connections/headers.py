"""Header objects parsed and folded once, for headers every message of a run shares.

The stdlib's ``EmailPolicy`` stores a header object that already has a ``name`` as it is, and
folds it by calling its ``fold(policy=...)`` (``email.policy.EmailPolicy.header_store_parse``
and ``_fold``). A :class:`PrefoldedHeader` is the stdlib's own parsed header with its folded form
cached per policy, so From, Date and custom headers cost their parsing and folding once per
run instead of once per message. The bytes are exactly what the stdlib writes.
"""

from __future__ import annotations

import re
from email import policy as email_policy
from email.header import Header
from email.policy import Policy
from typing import Any

__all__ = ["PrefoldedHeader", "prefolded", "text_header", "fold_text"]


class PrefoldedHeader(str):
    """A parsed header (the stdlib's ``header_factory`` result) whose folding is cached."""

    parsed: Any
    name: str
    defects: Any
    _folded: dict[int, str]

    def __new__(cls, parsed: Any) -> PrefoldedHeader:
        self = super().__new__(cls, str(parsed))
        self.parsed = parsed
        self.name = parsed.name
        self.defects = parsed.defects
        self._folded = {}
        return self

    def fold(self, *, policy: Policy) -> str:
        key = id(policy)
        folded = self._folded.get(key)
        if folded is None:
            folded = self._folded[key] = self.parsed.fold(policy=policy)
        return folded

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        # Pickled (e.g. to Spark workers) as name and value; parsed again on the other side.
        return prefolded, (self.name, str(self))

    def __getattr__(self, attr: str) -> Any:
        if attr == "parsed":  # not set yet (during unpickling): never recurse
            raise AttributeError(attr)
        # Everything else (addresses, datetime, params ...) comes from the parsed header.
        return getattr(self.parsed, attr)


def prefolded(name: str, value: str, policy: Any = email_policy.SMTP) -> PrefoldedHeader:
    """Parse ``name: value`` with the stdlib's header registry once; reuse it in many messages.

    Raises:
        ValueError: from the stdlib, for a value with CR or LF.
    """
    return PrefoldedHeader(policy.header_factory(name, value))


_FOLD = re.compile(r"\r?\n(?=[ \t])")


def fold_text(name: str, value: str, policy: Any = email_policy.SMTP) -> str:
    """``name: value`` folded as the stdlib folds it — unless that loses text.

    The stdlib folds a long unstructured header into RFC 2047 encoded words and may break the
    line at a space between two of them; decoders drop whitespace between adjacent encoded
    words (RFC 2047 §6.2), so that space is lost ("¡ ¡" arrives as "¡¡"). When the stdlib's
    folding does not decode back to ``value``, the text is encoded whole with the stdlib's
    ``email.header.Header`` instead: every space inside an encoded word, nothing lost.
    """
    parsed = policy.header_factory(name, value)
    folded = parsed.fold(policy=policy)
    body = _FOLD.sub("", folded.split(":", 1)[1].removesuffix(policy.linesep))
    body = body[1:] if body.startswith(" ") else body  # the space the stdlib writes after the colon
    if str(policy.header_factory(name, body)) == str(parsed):
        return folded
    encoded = Header(str(parsed), "utf-8", header_name=name).encode(linesep=policy.linesep)
    return f"{name}: {encoded}{policy.linesep}"


class _TextHeader(PrefoldedHeader):
    """An unstructured header folded by :func:`fold_text` (never loses a space)."""

    def fold(self, *, policy: Policy) -> str:
        key = id(policy)
        folded = self._folded.get(key)
        if folded is None:
            if getattr(policy, "utf8", False):
                folded = self.parsed.fold(policy=policy)  # raw UTF-8 (RFC 6532): no encoded words
            else:
                folded = fold_text(self.name, str(self), policy)
            self._folded[key] = folded
        return folded

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return text_header, (self.name, str(self))


def text_header(name: str, value: str, policy: Any = email_policy.SMTP) -> PrefoldedHeader:
    """An unstructured header (Subject, a custom header) folded by :func:`fold_text`.

    Raises:
        ValueError: from the stdlib, for a value with CR or LF.
    """
    return _TextHeader(policy.header_factory(name, value))
