"""Pipeline gems. The Email gem is a write-only Report/target gem."""

from .email import EmailGem, EmailProperties

__all__ = ["EmailGem", "EmailProperties"]
