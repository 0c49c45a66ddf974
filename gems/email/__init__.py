"""The Email gem: DataFrame in, report email out, delivery report back.

Names are imported on first use (PEP 562): a Spark Python worker that unpickles the partition
sender imports only what sending needs, not the gem, the fabric or the embedded server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Bound now: ``validate`` is also a submodule's name, which importing it would otherwise put here.
from .validate import Diagnostic, validate

_WHERE = {
    "MessageBuildError": ".content.compose", "RecipientError": ".content.compose",
    "GemInputError": ".data",
    "DeliveryError": ".gem", "EmailGem": ".gem", "GemError": ".gem", "GemValidationError": ".gem",
    "MessageCapError": ".gem",
    "SendLedger": ".run.ledger",
    "Built": ".content.preview", "write_previews": ".content.preview",
    "Aggregate": ".properties", "AttachmentSpec": ".properties", "CsvAttachment": ".properties",
    "EmailProperties": ".properties", "Formats": ".properties", "LedgerOptions": ".properties",
    "Summary": ".properties", "TableOptions": ".properties",
    "TemplateError": ".content.render",
}

__all__ = [
    "GemInputError", "MessageBuildError", "RecipientError", "DeliveryError", "EmailGem", "GemError", "GemValidationError", "MessageCapError",
    "SendLedger", "LedgerOptions", "Aggregate", "Built", "write_previews",
    "AttachmentSpec", "CsvAttachment", "EmailProperties", "Formats", "Summary", "TableOptions", "TemplateError",
    "Diagnostic", "validate",
]

if TYPE_CHECKING:
    from .content.compose import MessageBuildError, RecipientError
    from .content.preview import Built, write_previews
    from .content.render import TemplateError
    from .data import GemInputError
    from .gem import DeliveryError, EmailGem, GemError, GemValidationError, MessageCapError
    from .properties import (Aggregate, AttachmentSpec, CsvAttachment, EmailProperties, Formats, LedgerOptions,
                             Summary, TableOptions)
    from .run.ledger import SendLedger


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
