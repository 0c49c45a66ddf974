"""The Email gem's own errors (the connection's are :mod:`mailgem.connections.errors`)."""

from __future__ import annotations

from typing import Any

from mailgem.connections.errors import MailgemError

from .validate import Diagnostic

__all__ = ["GemError", "GemValidationError", "MessageCapError", "DeliveryError"]


class GemError(MailgemError):
    """The gem could not run; the message starts with the gem's name."""


class GemValidationError(GemError, ValueError):
    """Properties failed :func:`validate`; ``diagnostics`` lists every problem."""

    def __init__(self, message: str, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__(message)


class MessageCapError(GemError):
    """The run would send more than ``max_messages``; nothing was sent."""


class DeliveryError(GemError):
    """A message failed with ``on_error: stop``.

    Attributes:
        report: the delivery report of every message handled (sent ones included).
        cause: the first failure.
    """

    def __init__(self, message: str, report: Any, cause: BaseException) -> None:
        self.report = report
        self.cause = cause
        super().__init__(message)
