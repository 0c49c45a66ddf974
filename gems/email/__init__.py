"""The Email gem: DataFrame in, report email out, delivery report back."""

from .content.compose import MessageBuildError, RecipientError
from .data import GemInputError
from .gem import DeliveryError, EmailGem, GemError, GemValidationError, MessageCapError
from .run.ledger import SendLedger
from .content.preview import Built, write_previews
from .properties import Aggregate, AttachmentSpec, CsvAttachment, EmailProperties, Formats, LedgerOptions, Summary, TableOptions
from .content.render import TemplateError
from .validate import Diagnostic, validate

__all__ = [
    "GemInputError", "MessageBuildError", "RecipientError", "DeliveryError", "EmailGem", "GemError", "GemValidationError", "MessageCapError",
    "SendLedger", "LedgerOptions", "Aggregate", "Built", "write_previews",
    "AttachmentSpec", "CsvAttachment", "EmailProperties", "Formats", "Summary", "TableOptions", "TemplateError",
    "Diagnostic", "validate",
]
