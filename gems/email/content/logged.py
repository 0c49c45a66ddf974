"""Warnings logged once per process, not once per message: a per_row run would repeat them for
every message, and the delivery report's notes already name each one."""

from __future__ import annotations

import logging

__all__ = ["warn_once"]

log = logging.getLogger("mailgem.gems")

# What has been said (bounded: texts name columns and reasons, but a run could vary them).
_SAID: set[str] = set()
_MAX_SAID = 256


def warn_once(text: str) -> None:
    """Log ``text`` as a warning the first time it is said in this process. ``text`` names
    columns, options and reasons, never a value or a file name rendered from data."""
    if text not in _SAID and len(_SAID) < _MAX_SAID:
        _SAID.add(text)
        log.warning("%s", text)
