"""The Email gem: a write-only Report/target step that turns a DataFrame into one report email.

As YAML, in a job file (``mailgem run job.yaml``)::

    email:
      connection: reports-smtp
      to: ops@example.com
      subject: "{{ row_count }} late flights on {{ run_date }}"
      attachments: [{file_name: "late-{{ run_date }}.csv", compression: gzip}]

As Python::

    gem = EmailGem({"connection": "reports-smtp", "to": "ops@example.com",
                    "subject": "{{ row_count }} rows"}, fabric=fabric)
    report = gem.apply(spark, df)      # Spark in, Spark out; pandas in, pandas out
"""

from __future__ import annotations

import datetime as dt
import logging
from email.utils import getaddresses
from typing import Any

import css_inline
import pyarrow as pa
from pydantic import ValidationError

from connections.errors import MailgemError, MessageTooLargeError, SmtpError
from connections.model import format_validation_error
from connections.sync import run_sync
from connections.transport import SmtpTransport
from fabric.model import Fabric

from .attachments import build_csv
from .data import FrameData, collect, column_names, is_spark_frame
from .message import build_message
from .properties import EmailProperties
from .render import DEFAULT_HTML, DEFAULT_TEXT, base_context, one_line, render
from .report import DeliveryRow, to_pandas, to_spark
from .table import fit_rows, format_rows, html_table, summarise, text_table
from .validate import MAX_BODY_BYTES, MAX_SUBJECT_CHARS, Diagnostic, validate

__all__ = ["EmailGem", "GemError", "GemValidationError", "DeliveryError"]

log = logging.getLogger("mailgem.gems")

# The user's own <style> blocks become inline styles too; remote stylesheets are never fetched.
_INLINER = css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)


class GemError(MailgemError):
    """The gem could not run; the message starts with the gem's name."""


class GemValidationError(GemError, ValueError):
    """Properties failed :func:`validate`; ``diagnostics`` lists every problem."""

    def __init__(self, message: str, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__(message)


class DeliveryError(GemError):
    """Sending failed with ``on_error: stop``; ``report`` holds the delivery report rows so far."""

    def __init__(self, message: str, report: Any, cause: BaseException) -> None:
        self.report = report
        self.cause = cause
        super().__init__(message)


class EmailGem:
    """Send a DataFrame as a report email through a fabric's SMTP connection.

    Args:
        properties: :class:`EmailProperties` or a dict of them.
        fabric: the fabric holding the connection and its secret.
        user: who runs the gem (default: the current user); must be in one of the fabric's teams.
        name: the gem's name in messages and in templates (``job``).
        params: extra values for templates (``params.x``).

    Raises:
        GemValidationError: the properties do not parse.
    """

    def __init__(self, properties: EmailProperties | dict[str, Any], fabric: Fabric, *, user: str | None = None,
                 name: str = "email", params: dict[str, Any] | None = None) -> None:
        if isinstance(properties, dict):
            try:
                properties = EmailProperties.model_validate(properties)
            except ValidationError as exc:
                raise GemValidationError(f"gem {name!r}: {format_validation_error(exc, 'properties')}", []) from None
        self.properties = properties
        self.fabric = fabric
        self.user = user
        self.name = name
        self.params = dict(params or {})

    def __repr__(self) -> str:
        return f"EmailGem(name={self.name!r}, connection={self.properties.connection!r}, fabric={self.fabric.name!r})"

    @staticmethod
    def schema() -> dict[str, Any]:
        """JSON Schema of the properties (for a gem dialog)."""
        return EmailProperties.model_json_schema()

    def validate(self, columns: list[str] | None = None) -> list[Diagnostic]:
        """Diagnostics for these properties, checked against ``columns`` when given."""
        return validate(self.properties, columns)

    # -- building -------------------------------------------------------------------------

    def _collect(self, in0: Any) -> tuple[FrameData, pa.Table]:
        """Collect the frame and the table to show (the summary, or the selected columns)."""
        props = self.properties
        needs_all = bool(props.attachments) or props.table.summary is not None
        data = collect(in0, all_rows=needs_all, head_rows=props.table.max_rows)
        shown = summarise(data.table, props.table.summary) if props.table.summary else data.table
        if props.table.columns:
            shown = shown.select(props.table.columns)
        return data, shown

    def build(self, in0: Any, run_ts: dt.datetime | None = None) -> tuple[Any, FrameData] | tuple[None, FrameData]:
        """Render the message for ``in0`` without sending; ``(None, data)`` when skipped as empty.

        Returns:
            ``(EmailMessage or None, FrameData)``.

        Raises:
            GemValidationError, TemplateError, MessageTooLargeError (body over 10 MB).
        """
        props = self.properties
        problems = [d for d in validate(props, column_names(in0)) if d.severity == "error"]
        if problems:
            raise GemValidationError(f"gem {self.name!r} has {len(problems)} problem(s):\n"
                                     + "\n".join(f"  {d}" for d in problems), problems)
        data, shown_table = self._collect(in0)
        if data.row_count == 0 and props.on_empty == "skip":
            return None, data
        run_ts = run_ts or dt.datetime.now(dt.UTC)
        ctx = base_context(self.name, run_ts, self.params)
        ctx.update(row_count=data.row_count, columns=data.columns)
        rows = data.table.slice(0, props.table.max_rows).to_pylist()
        attachments = [build_csv(data.table, spec, render(f"attachments[{i}].file_name", spec.file_name, ctx).strip())
                       for i, spec in enumerate(props.attachments)]
        table = format_rows(shown_table, props.table.max_rows, props.formats) if props.table.enabled else None
        note = "the full data is attached" if attachments and not props.table.summary else ""

        def bodies(n: int) -> tuple[str | None, str | None]:
            page = dict(ctx, rows=rows, shown_rows=n, truncated=table is not None and n < table.total,
                        table=html_table(table, n, note) if table else "",
                        table_text=text_table(table, n) if table else "")
            # Always a text part (the alternative mail clients fall back to); HTML unless the
            # user chose text only.
            text = render("text_body", props.text_body if props.text_body is not None else DEFAULT_TEXT, page)
            html_src = props.html_body if props.html_body is not None else (DEFAULT_HTML if props.text_body is None else None)
            if html_src is None:
                return text, None
            html = render("html_body", html_src, page, html=True)
            return text, _INLINER.inline(html) if "<style" in html.lower() else html

        shown_rows = min(props.table.max_rows, table.total) if table else 0
        def html_bytes(n: int) -> bytes:
            # Measured as transmitted: every line ends in CRLF on the wire (RFC 5322 §2.1).
            return (bodies(n)[1] or "").replace("\n", "\r\n").encode()

        if table is not None and len(html_bytes(shown_rows)) > props.table.max_html_bytes:
            shown_rows, _ = fit_rows(html_bytes, shown_rows, props.table.max_html_bytes)
            log.info("gem %s: body table cut to %d of %d rows to stay under %d bytes of HTML",
                     self.name, shown_rows, table.total, props.table.max_html_bytes)
        text, html = bodies(shown_rows)
        for part, body in (("text_body", text), ("html_body", html)):
            if body is not None and len(body.encode()) > MAX_BODY_BYTES:
                raise MessageTooLargeError(f"gem {self.name!r}: rendered {part} is {len(body.encode()):,} bytes, over "
                                           f"{MAX_BODY_BYTES:,}", size_bytes=len(body.encode()), limit_bytes=MAX_BODY_BYTES)
        subject = one_line(render("subject", props.subject, dict(ctx, rows=rows)))
        if len(subject) > MAX_SUBJECT_CHARS:
            raise GemValidationError(f"gem {self.name!r}: rendered subject is {len(subject)} characters, over "
                                     f"{MAX_SUBJECT_CHARS} (RFC 5322 §2.1.1)", [])
        charset = self.fabric.connection(props.connection).charset
        message = build_message(props, subject=subject, text=text, html=html, attachments=attachments, charset=charset)
        return message, data

    # -- sending --------------------------------------------------------------------------

    def apply(self, spark: Any, in0: Any) -> Any:
        """Send one report email for ``in0`` and return the delivery report.

        Args:
            spark: the SparkSession (used to build a Spark report; may be ``None`` for pandas input).
            in0: a Spark or pandas DataFrame; any columns.

        Returns:
            the delivery report (see :mod:`gems.email.report`): a Spark DataFrame for Spark
            input, pandas for pandas input; one row.

        Raises:
            GemValidationError: before anything is read or sent.
            AccessDeniedError, SecretNotFoundError: the user may not use the connection.
            DeliveryError: sending failed and ``on_error`` is ``stop`` (the cause is attached).
        """
        props = self.properties
        # Access and secrets first: a user who may not send learns it before any data is read.
        transport = self.fabric.transport(props.connection, self.user)
        recipients = _envelope(props)
        key = f"{self.name}:report"
        row = DeliveryRow(message_key=key, status="failed", recipients=", ".join(recipients), connection=props.connection)
        try:
            message, data = self.build(in0)
            if message is None:
                row.status = "skipped"
                row.error = "the frame is empty and on_empty is skip"
                log.info("gem %s: frame is empty, nothing sent (on_empty: skip)", self.name)
            else:
                row.attempts = 1
                result = run_sync(_send(transport, message, recipients))
                row.status = "partial" if result.refused else "sent"
                row.accepted = len(result.accepted)
                row.refused = "; ".join(f"{r}: {v}" for r, v in result.refused.items())
                row.reply_code, row.enhanced_status = result.code, result.enhanced_status
                row.message_id, row.size_bytes = result.message_id, result.size_bytes
                log.info("gem %s: report of %d rows sent to %d recipient(s) via %s (%s %s)", self.name,
                         data.row_count, len(result.accepted), props.connection, result.code, result.message)
        except (SmtpError, GemError, MailgemError) as exc:
            row.error = str(exc)
            if isinstance(exc, SmtpError):
                row.reply_code, row.enhanced_status = exc.code, exc.enhanced_status
            report = self._report(spark, in0, [row])
            if props.on_error == "stop":
                raise DeliveryError(f"gem {self.name!r}: {exc}", report, exc) from exc
            log.warning("gem %s: %s (on_error: continue)", self.name, exc)
            return report
        return self._report(spark, in0, [row])

    @staticmethod
    def _report(spark: Any, in0: Any, rows: list[DeliveryRow]) -> Any:
        if is_spark_frame(in0):
            session = spark if spark is not None else in0.sparkSession
            return to_spark(session, rows)
        return to_pandas(rows)


def _envelope(props: EmailProperties) -> list[str]:
    seen: dict[str, None] = {}
    for _, address in getaddresses(props.to + props.cc + props.bcc):
        if address:
            seen.setdefault(address, None)
    return list(seen)


async def _send(transport: SmtpTransport, message: Any, recipients: list[str]) -> Any:
    async with transport.connect() as session:
        return await session.send(message, recipients)
