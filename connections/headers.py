"""Header objects parsed and folded once, for headers every message of a run shares.

The stdlib's ``EmailPolicy`` stores a header object that already has a ``name`` as it is, and
folds it by calling its ``fold(policy=...)`` (``email.policy.EmailPolicy.header_store_parse``
and ``_fold``). A :class:`PrefoldedHeader` is the stdlib's own parsed header with its folded form
cached per policy, so From, Date and custom headers cost their parsing and folding once per
run instead of once per message. The bytes are exactly what the stdlib writes.
"""

from __future__ import annotations

from email import policy as email_policy
from email.policy import Policy
from typing import Any

__all__ = ["PrefoldedHeader", "prefolded"]


class PrefoldedHeader(str):
    """A parsed header (the stdlib's ``header_factory`` result) whose folding is cached."""

    def __new__(cls, parsed: Any) -> PrefoldedHeader:
        self = super().__new__(cls, str(parsed))
        self.parsed = parsed
        self.name = parsed.name
        self.defects = parsed.defects
        self._folded: dict[int, str] = {}
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
