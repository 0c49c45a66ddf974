"""Pipeline gems. The Email gem is a write-only Report/target gem."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["EmailGem", "EmailProperties"]

if TYPE_CHECKING:
    from .email import EmailGem, EmailProperties


def __getattr__(name: str) -> Any:
    # On first use (PEP 562), so importing a submodule does not import the whole gem.
    if name in __all__:
        from . import email

        return getattr(email, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
