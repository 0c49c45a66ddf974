"""The Email gem: DataFrame in, report email out, delivery report back."""

from .compose import MessageBuildError, RecipientError
from .data import GemInputError
from .gem import DeliveryError, EmailGem, GemError, GemValidationError, MessageCapError
from .ledger import SendLedger
from .preview import Built, write_previews
from .properties import Aggregate, CsvAttachment, EmailProperties, Formats, LedgerOptions, Summary, TableOptions
from .render import TemplateError
from .validate import Diagnostic, validate

__all__ = [
    "GemInputError", "MessageBuildError", "RecipientError", "DeliveryError", "EmailGem", "GemError", "GemValidationError", "MessageCapError",
    "SendLedger", "LedgerOptions", "Aggregate", "Built", "write_previews",
    "CsvAttachment", "EmailProperties", "Formats", "Summary", "TableOptions", "TemplateError",
    "Diagnostic", "validate",
]
