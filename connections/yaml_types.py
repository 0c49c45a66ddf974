"""Names of YAML value types for messages about a wrong type (``must be text, not a list``)."""

from __future__ import annotations

from typing import Any

__all__ = ["describe_type"]


def describe_type(value: Any) -> str:
    """What ``value`` is, as a YAML file's author would say it: ``null``, ``a boolean``,
    ``a number``, ``text``, ``a list`` or ``a mapping``. The value itself is never quoted: it
    may be a secret written in the wrong place."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: a bool is an int in Python
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"
