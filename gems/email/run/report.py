"""The delivery report: one row per message, as a pandas or Spark DataFrame.

Columns: ``message_key`` (str: ``report``, ``group:[values]``, ``row:[key values]`` or
``row:<hash>``; ``(partition)`` for a Spark partition that could not be read at all),
``status`` (a :class:`~.status.DeliveryStatus` as a plain str: ``sent`` | ``partial`` | ``failed`` |
``deferred`` (daily limit) | ``not_started`` (a stop came first) | ``already_sent`` (ledger) |
``skipped`` (empty frame) | ``skipped_by_rule`` (``send_if`` was false for the message, with
the condition in ``error``; or ``skip_if`` held: one row, key ``(run)``) | ``dry_run`` (built, not sent)),
``recipients`` (str, comma-separated envelope recipients), ``accepted`` (int), ``refused`` (str,
``addr: code text`` pairs), ``reply_code`` (int, null if none), ``enhanced_status`` (str),
``error`` (str), ``error_type`` (str: the error's class, e.g. ``AuthenticationError``,
``RecipientError``, ``TemplateError``; the names of :data:`CONNECTION_ERRORS` are :data:`CONNECTION_ERROR_NAMES`), ``message_id`` (str), ``size_bytes`` (int), ``connection`` (str),
``attempts`` (int), ``sent_at`` (UTC timestamp), ``envelope_id`` (str: the RFC 3461 ``ENVID``
a bounce quotes, when the connection asks for delivery status notifications; see
:mod:`mailgem.connections.dsn`), ``notes`` (str: what was changed on the way without failing the
message, e.g. XLSX cells cut to Excel's 32,767 characters, and in which columns).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mailgem.connections.errors import (
    AuthenticationError,
    AuthNotSupportedError,
    InsecureAuthError,
    MailgemError,
    SecurityModeMismatchError,
    SenderRefusedError,
    ServerUnavailableError,
    SmtpConnectError,
    SmtpDisconnectedError,
    SmtpTimeoutError,
    StartTlsNotOfferedError,
    TlsError,
)

from .status import DELIVERED, DeliveryStatus

__all__ = ["CONNECTION_ERRORS", "CONNECTION_ERROR_NAMES", "DELIVERED", "DeliveryRow", "to_pandas", "to_spark",
           "with_nullable_ints", "REPORT_COLUMNS", "SPARK_SCHEMA", "skipped_row"]


# Failures of the connection itself, not of one message: nothing can be sent while they last.
CONNECTION_ERRORS: frozenset[type[MailgemError]] = frozenset({
    SmtpConnectError, SmtpTimeoutError, SmtpDisconnectedError, TlsError, SecurityModeMismatchError,
    StartTlsNotOfferedError, InsecureAuthError, AuthenticationError, AuthNotSupportedError,
    SenderRefusedError, ServerUnavailableError,
})
# The same as a report row's ``error_type`` names them (the class's own name: a subclass not
# listed, e.g. ContentWithheldError, is not one of them).
CONNECTION_ERROR_NAMES = frozenset(error.__name__ for error in CONNECTION_ERRORS)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass
class DeliveryRow:
    """One message's outcome."""

    message_key: str
    status: str  # a DeliveryStatus (the frames hold it as a plain str, see _record)
    recipients: str = ""
    accepted: int = 0
    refused: str = ""
    reply_code: int | None = None
    enhanced_status: str | None = None
    error: str | None = None
    error_type: str | None = None
    message_id: str | None = None
    size_bytes: int | None = None
    connection: str = ""
    attempts: int = 0
    sent_at: dt.datetime = field(default_factory=_now)
    envelope_id: str | None = None
    notes: str | None = None


REPORT_COLUMNS = list(DeliveryRow.__dataclass_fields__)
SPARK_SCHEMA = (
    "message_key string, status string, recipients string, accepted int, refused string, "
    "reply_code int, enhanced_status string, error string, error_type string, message_id string, size_bytes long, "
    "connection string, attempts int, sent_at timestamp_ntz, envelope_id string, notes string"
)


def with_nullable_ints(frame: pd.DataFrame) -> pd.DataFrame:
    """Codes, counts and sizes as nullable integers (``Int64``): a missing reply code stays missing."""
    for col in ("accepted", "reply_code", "size_bytes", "attempts"):
        frame[col] = frame[col].astype("Int64")
    return frame


def _record(row: DeliveryRow) -> dict[str, Any]:
    """A row's fields as the frames hold them: its own ``__dict__`` (no copy) unless its status is
    a :class:`DeliveryStatus`, which becomes a plain str (pandas would keep the enum's class in the
    column, and Spark's pickled rows would carry it to the JVM)."""
    record = vars(row)
    status = record["status"]
    return record if type(status) is str else {**record, "status": str(status)}


def to_pandas(rows: list[DeliveryRow]) -> pd.DataFrame:
    """The report as pandas."""
    return with_nullable_ints(pd.DataFrame([_record(r) for r in rows], columns=REPORT_COLUMNS))  # flat: no deep copy


def skipped_row(message_key: str, connection: str) -> DeliveryRow:
    """The report's one row when an empty frame is skipped (``on_empty: skip``)."""
    return DeliveryRow(message_key, DeliveryStatus.SKIPPED, error="the frame is empty and on_empty is skip", connection=connection)


def to_spark(spark: Any, rows: list[DeliveryRow]) -> Any:
    """The report as a Spark DataFrame with a fixed schema."""
    return spark.createDataFrame([tuple(_record(r).values()) for r in rows], schema=SPARK_SCHEMA)
