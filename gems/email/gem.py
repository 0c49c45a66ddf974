"""The Email gem: a write-only Report/target step that turns a DataFrame into email.

Modes: ``report`` (one email for the frame), ``per_group`` (one per group of ``group_by``,
each with only its group's rows) and ``per_row`` (one per row, every column in templates).

As YAML, in a job file (``mailgem run job.yaml``)::

    email:
      connection: reports-smtp
      mode: per_group
      group_by: [team]
      to_column: manager_email
      subject: "{{ group.team }}: {{ row_count }} open tickets"
      ledger: {path: state/mailgem-ledger.sqlite}

As Python::

    gem = EmailGem({"connection": "reports-smtp", "to": "ops@example.com",
                    "subject": "{{ row_count }} rows"}, fabric=fabric)
    report = gem.apply(spark, df)      # Spark in, Spark out; pandas in, pandas out
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from pydantic import SecretStr, ValidationError

from mailgem.connections.delivery import Deliverer
from mailgem.connections.gate import OPEN
from mailgem.connections.model import format_validation_error
from mailgem.connections.sync import run_sync
from mailgem.connections.session import TRACE_HEADROOM_BYTES
from mailgem.connections.precheck import ChainCheck, check_chain
from mailgem.connections.transport import SmtpTransport
from mailgem.fabric.model import Fabric, current_user

from ..spark_info import parallelism
from .content.compose import Composer
from .content.files import missing_files
from .data import collect, column_names, first_groups, is_spark_frame, session_zone, spark_instant_columns
from .run.distributed import PartitionSender, send_distributed, ship_in1
from .run.in1 import check_in1_frame, collect_in1
from .run.ledger import LedgerTarget, SendLedger
from .run.ledger_open import ledger_target, open_run_ledger
from .run.passwords import protect_passwords
from .run.plan import count_units, needs_all_rows, units
from .run.skip_rule import RUN_KEY, skip_if_reason, skipped_run_row
from .run.spark_result import spark_result
from .content.preview import Built, built_messages
from .run.progress import Progress
from .properties import EmailProperties
from .run.report import DeliveryRow, skipped_row, to_pandas, to_spark
from .run.sender import SendContext, StopRun, send_units
from .run.stop import StopSignal, beacon_for
from .errors import DeliveryError, GemError, GemValidationError, MessageCapError
from .validate import Diagnostic, invalid_params, validate

if TYPE_CHECKING:  # for the overloads of apply: neither is imported at run time
    import pandas as pd
    from pyspark.sql import DataFrame as SparkDataFrame, SparkSession

__all__ = ["EmailGem", "Built", "GemError", "GemValidationError", "DeliveryError", "MessageCapError"]

log = logging.getLogger("mailgem.gems")


_NO_FRAME: Any = object()


def _is_frame(value: Any) -> bool:
    """A Spark or pandas DataFrame (not a SparkSession, not ``None``)."""
    return is_spark_frame(value) or (hasattr(value, "columns") and hasattr(value, "iloc"))


class EmailGem:
    """Send a DataFrame as email through a fabric's SMTP connection.

    Args:
        properties: :class:`EmailProperties` or a dict of them.
        fabric: the fabric holding the connection and its secret.
        user: who runs the gem (default: the current user); must be in one of the fabric's teams.
        name: the gem's name in messages, in templates (``job``) and in the ledger.
        params: extra values for templates (``params.x``).
        base_dir: where relative ``files`` paths start (default: the current directory; a job
            file's gem: the job file's folder).

    Raises:
        GemValidationError: the properties do not parse.
    """

    def __init__(self, properties: EmailProperties | dict[str, Any], fabric: Fabric, *, user: str | None = None,
                 name: str = "email", params: dict[str, Any] | None = None, base_dir: Path | None = None) -> None:
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
        self.base_dir = base_dir
        # The connection chain as check_connection() left it, for the next apply (see there).
        self._transports: list[SmtpTransport] | None = None
        self._checked: ChainCheck | None = None
        # Outcomes of the messages sent from this process so far, by status (the driver's own
        # sends; a Spark job's arrive with its report): what a crash had already done.
        self.outcomes: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"EmailGem(name={self.name!r}, mode={self.properties.mode!r}, connection={self.properties.connection!r})"

    @staticmethod
    def schema() -> dict[str, Any]:
        """JSON Schema of the properties (for a gem dialog)."""
        return EmailProperties.model_json_schema()

    def validate(self, columns: Any = None, in1_columns: Any = None, *, has_in1: bool | None = None) -> list[Diagnostic]:
        """Diagnostics for these properties (templates rendered against a sample context with
        this gem's ``params``), checked against ``columns`` when given: column names, a
        ``{name: type}`` dict, or a Spark/pandas DataFrame (only its schema is used);
        ``in1_columns`` likewise for the second input (``slice_by``, ``from: in1``).
        ``has_in1=False`` makes what needs a second input an error."""
        columns, in1_columns = (c if c is None or isinstance(c, dict | list | tuple) else column_names(c)
                                for c in (columns, in1_columns))
        return validate(self.properties, columns, job=self.name, params=self.params, in1_columns=in1_columns,
                        special_domains=self.fabric.special_domains(self.properties.connection),
                        has_in1=has_in1 if has_in1 is not None else (True if in1_columns is not None else None))

    def _check(self, in0: Any, in1: Any = None) -> None:
        check_in1_frame(self.properties, self.name, in0, in1)
        problems = [d for d in self.validate(column_names(in0), None if in1 is None else column_names(in1))
                    if d.severity == "error"]
        problems += missing_files(self.properties, self.base_dir) + invalid_params(self.params)
        if problems:
            raise GemValidationError(f"gem {self.name!r} has {len(problems)} problem(s):\n"
                                     + "\n".join(f"  {d}" for d in problems), problems)

    def _composer(self, transport: SmtpTransport, run_ts: dt.datetime, size_limit: int | None = None,
                  passwords: dict[str, SecretStr] | None = None) -> Composer:
        return Composer(self.properties, job=self.name, params=self.params, charset=transport.connection.charset,
                        run_ts=run_ts, size_limit=size_limit, special_domains=transport.connection.allowed_special_domains,
                        passwords=passwords, base_dir=self.base_dir)

    def _size_limit(self, server_size: int | None) -> int | None:
        """The largest message to build, in bytes: ``max_message_bytes`` and the server's SIZE
        (less the room a server's trace headers take), whichever is smaller."""
        limits = [self.properties.max_message_bytes]
        if server_size:
            limits.append(server_size - TRACE_HEADROOM_BYTES)
        known = [n for n in limits if n]
        return min(known) if known else None

    def _server_size(self, transports: list[SmtpTransport]) -> int | None:
        """The server's SIZE, learned before composing: only when attachments may be compressed
        or split to fit it (otherwise each session checks SIZE before MAIL FROM)."""
        if self.properties.attachments_over_limit == "error" or not (self.properties.attachments or self.properties.files):
            return None
        return self._check_chain(transports).size_limit_bytes

    def _check_chain(self, transports: list[SmtpTransport]) -> ChainCheck:
        """The chain's check (:func:`check_connection`'s, when it ran on these transports)."""
        if self._checked is None or self._transports is not transports:
            self._checked = run_sync(check_chain(transports))
            for warning in self._checked.warnings():
                log.warning("gem %s: %s", self.name, warning)
        return self._checked

    def check_connection(self) -> ChainCheck:
        """Open one session through the gem's connection now, and through its fallbacks while
        those before fail: connect, TLS, AUTH and the sender check of ``mailgem connection
        test`` (``MAIL FROM`` and ``RCPT TO`` the sender, ``RSET``; nothing is sent), then
        ``QUIT``. Its verdict holds for this gem's next :meth:`apply`, on the driver and on
        Spark executors: a refused login or sender is not asked again, and a checked sender is
        not checked again. ``mailgem run`` calls it before Spark starts.

        Returns:
            what each connection tried said; ``ok`` false when none passed (``error`` says why).

        Raises:
            AccessDeniedError, SecretNotFoundError: the user may not use the connection.
        """
        self._transports = self.fabric.transports(self.properties.connection, self.user)
        self._checked = run_sync(check_chain(self._transports))  # its warnings are the caller's to show
        return self._checked

    def _cap(self, count: int) -> None:
        cap = self.properties.max_messages
        if cap is not None and count > cap:
            raise MessageCapError(f"gem {self.name!r}: this run would send {count:,} messages, over max_messages "
                                  f"{cap:,}; nothing was sent. Raise max_messages or filter the frame.")

    def build(self, in0: Any, limit: int | None = None, in1: Any = None) -> Iterator[Built]:
        """Build the frame's messages exactly as :meth:`apply` would, without sending and without
        reading any secret: same composer, same From and envelope sender (the connection's), a
        new Message-ID each. A message that cannot be built comes with its error instead.

        Args:
            in0: a Spark or pandas DataFrame.
            limit: at most this many messages (``None``: all).
            in1: the second input (see :meth:`apply`); with ``slice_by`` on Spark, only the rows
                matching the built messages' keys are read.

        Raises:
            GemValidationError, AccessDeniedError, FabricConfigError: as :meth:`apply`.
        """
        self._check(in0, in1)
        props = self.properties
        self.fabric.check_access(self.user or current_user())
        transport = SmtpTransport(self.fabric.connection(props.connection), identity_only=True)  # no secret read
        if (skipped := skip_if_reason(props, self.name, self.params, dt.datetime.now(dt.UTC), frame=in0)) is not None:
            yield Built(RUN_KEY, [], None, None, skipped=skipped)  # over the whole frame, before any limit
            return
        if limit is not None and props.mode == "per_row":
            # The first N messages are the first N rows: read no more (a preview of a huge frame stays quick).
            in0 = in0.limit(limit) if is_spark_frame(in0) else in0.head(limit)
        elif limit is not None and props.mode == "per_group" and is_spark_frame(in0):
            in0 = first_groups(in0, props.group_by, limit)  # only those groups' rows reach the driver
        data = collect(in0, all_rows=True, head_rows=props.table.max_rows, timezone=props.formats.timezone)
        composer = self._composer(transport, dt.datetime.now(dt.UTC), self.properties.max_message_bytes)
        work = units(data.table, props, data.row_count, data.invalid_rows, data.key_zones, collect_in1(in1, in0, props))
        yield from islice(built_messages(composer, transport, work), limit)

    def preview(self, in0: Any, limit: int = 3, in1: Any = None) -> list[Built]:
        """The first ``limit`` messages, built but not sent (see :meth:`build`). In a notebook,
        ``Built._repr_html_`` shows each one (subject, recipients, HTML body)."""
        return list(self.build(in0, limit, in1))

    # Typed for users' checkers: pandas in -> pandas report out, Spark (classic or Connect) in ->
    # Spark report out, with or without the session before the frame.
    @overload
    def apply(self, spark: pd.DataFrame, in0: pd.DataFrame | None = None, /, *, in1: pd.DataFrame | None = None,
              stop: StopSignal | None = None) -> pd.DataFrame: ...

    @overload
    def apply(self, spark: SparkSession | None, in0: pd.DataFrame, in1: pd.DataFrame | None = None, /, *,
              stop: StopSignal | None = None) -> pd.DataFrame: ...

    @overload
    def apply(self, spark: SparkDataFrame, in0: SparkDataFrame | None = None, /, *, in1: SparkDataFrame | None = None,
              stop: StopSignal | None = None) -> SparkDataFrame: ...

    @overload
    def apply(self, spark: SparkSession | None, in0: SparkDataFrame, in1: SparkDataFrame | None = None, /, *,
              stop: StopSignal | None = None) -> SparkDataFrame: ...

    def apply(self, spark: Any, in0: Any = _NO_FRAME, in1: Any = None, *, stop: StopSignal | None = None) -> Any:
        """Send the frame's emails and return the delivery report.

        ``apply(df)``, ``apply(spark, df)``, ``apply(spark, df, df1)`` and ``apply(df, df1)`` all
        work; the SparkSession is needed only to return a Spark report for a Spark frame, and a
        Spark frame knows its own.

        Args:
            spark: the SparkSession (may be ``None`` for pandas input), or the frame itself.
            in0: a Spark or pandas DataFrame; columns as the properties reference them.
            in1: the second input (same kind as ``in0``): data the messages carry
                (``attachments[].from: in1``, ``table.from: in1``), all of it in every message,
                or sliced by ``slice_by`` (see :mod:`mailgem.gems.email.run.in1`).
            stop: a stop signal the caller may request while this runs (a scheduler's SIGTERM):
                no further message starts, those being written finish and are recorded, and
                the report has a ``not_started`` row, with the reason, for every other message
                (on Spark executors too, told by the driver). No exception is raised for it.

        Returns:
            the delivery report (see :mod:`mailgem.gems.email.run.report`), one row per message: a Spark
            DataFrame for Spark input, pandas for pandas input.

        Raises:
            GemValidationError: before anything is read or sent.
            AccessDeniedError, SecretNotFoundError: the user may not use the connection.
            MessageCapError: more messages than ``max_messages``; nothing sent.
            DeliveryError: a message failed and ``on_error`` is ``stop`` (sent ones are in its report).
        """
        if in0 is _NO_FRAME or _is_frame(spark):  # apply(df), apply(df, df1)
            spark, in0, in1 = None, spark, (in1 if in0 is _NO_FRAME else in0)
        props = self.properties
        self._check(in0, in1)
        # Access and secrets first: a user who may not send learns it before any data is read.
        transports = self._transports or self.fabric.transports(props.connection, self.user)
        passwords = protect_passwords(props, self.fabric, self.user)  # read here, on the driver, once
        self.outcomes.clear()
        primary = transports[0]
        run_ts = dt.datetime.now(dt.UTC)
        is_distributed = is_spark_frame(in0) and props.mode != "report" and props.distributed
        server_size = self._server_size(transports) if not is_distributed else None
        composer = self._composer(primary, run_ts, self._size_limit(server_size), passwords)
        run_key = composer.run_key()
        domain = primary.domain
        destination = self.fabric.destination(props.connection)
        # The ledger next (its secret, its database, its tables): a wrong URL or password is
        # reported before Spark reads anything.
        target = ledger_target(props.ledger, self.fabric, self.user)
        ledger = open_run_ledger(target, self.name, run_key, destination)
        try:
            if is_distributed:
                if ledger is not None:
                    ledger.close()  # tables created once, here, before the executors open it
                    ledger = None
                return self._apply_distributed(spark or in0.sparkSession, in0, transports, run_ts, run_key, domain,
                                               destination, target, stop, passwords, in1)
            return self._apply_local(spark, in0, transports, composer, run_key, domain, ledger, stop, in1)
        finally:
            if ledger is not None:
                ledger.close()
            self._transports, self._checked = None, None  # check_connection() speaks for one run

    def _apply_local(self, spark: Any, in0: Any, transports: list[SmtpTransport], composer: Composer, run_key: str,
                     domain: str, ledger: SendLedger | None, stop: StopSignal | None, in1: Any = None) -> Any:
        props = self.properties
        primary = transports[0]

        data = collect(in0, all_rows=needs_all_rows(props), head_rows=props.table.max_rows,
                       timezone=props.formats.timezone)
        if data.row_count == 0 and props.on_empty == "skip":
            log.info("gem %s: frame is empty, nothing sent (on_empty: skip)", self.name)
            key = "report" if props.mode == "report" else "(none)"
            return self._report(spark, in0, [skipped_row(key, props.connection)])
        if (skipped := skip_if_reason(props, self.name, self.params, composer.base["run_ts"], data=data)) is not None:
            return self._report(spark, in0, [skipped_run_row(skipped, props.connection)])
        total = count_units(data.table, props) if props.mode != "report" else 1
        self._cap(total)
        in1_rows = collect_in1(in1, in0, props)
        progress = Progress(total, self.name)

        def done(row: DeliveryRow) -> None:
            self.outcomes[str(row.status)] += 1  # plain str keys, as the report holds them
            progress(row)

        ctx = SendContext(composer, self.name, run_key, domain, primary.connection.name, ledger,
                          stop_on_error=props.on_error == "stop", on_done=done,
                          envelope_ids=primary.connection.dsn is not None, stop=stop)

        async def run() -> list[DeliveryRow]:
            # The first session checks the sender before others open (unless checked already).
            deliverer = Deliverer(transports, gate=stop or OPEN, check_sender=True)
            try:
                work = units(data.table, props, data.row_count, data.invalid_rows, data.key_zones, in1_rows)
                return await send_units(work, ctx, deliverer, concurrency=deliverer.in_flight)
            finally:
                await deliverer.aclose()

        try:
            rows = run_sync(run())
        except StopRun as exc:
            report = self._report(spark, in0, exc.rows)
            raise DeliveryError(f"gem {self.name!r}: {exc}", report, exc.cause) from exc.cause
        finally:
            progress.close()
        return self._report(spark, in0, rows)

    def _apply_distributed(self, spark: Any, frame: Any, transports: list[SmtpTransport], run_ts: dt.datetime,
                           run_key: str, domain: str, destination: str, ledger: LedgerTarget | None,
                           stop: StopSignal | None, passwords: dict[str, SecretStr], in1: Any = None) -> Any:
        props = self.properties
        if (skipped := skip_if_reason(props, self.name, self.params, run_ts, frame=frame)) is not None:
            return to_spark(spark, [skipped_run_row(skipped, props.connection)])  # one Spark aggregation, no collect
        # The frame is computed once, by the sending job. A count (or an emptiness check) first
        # would compute an uncached frame's upstream once more, in full when its plan has a
        # shuffle; an empty frame is known from the empty report instead. Only max_messages
        # needs a pass first (at most max_messages + 1 rows; the exact count only for the error).
        if props.max_messages is not None:
            emails = frame if props.mode == "per_row" else frame.select(*props.group_by).distinct()
            if emails.limit(props.max_messages + 1).count() > props.max_messages:
                self._cap(emails.count())
        # One session from the driver first (login and sender check, unless check_connection()
        # did it): a refusal is remembered by the transport, and a sender the server took is
        # marked checked; the transports travel to the workers with that knowledge, so none of
        # them asks the server again.
        server_size = self._check_chain(transports).size_limit_bytes
        log.info("gem %s: sending %s messages from the Spark executors", self.name, props.mode)
        workers = parallelism(spark)  # once: on Spark Connect it asks the server
        # The TIMESTAMP columns (instants) and the session zone, read once here for the workers (see .data).
        instants = spark_instant_columns(frame), session_zone(frame)
        frame, shipment = ship_in1(frame, in1, props)
        with beacon_for(spark, stop) as beacon:
            sender = PartitionSender(props, transports, job=self.name, params=self.params, run_ts=run_ts,
                                     run_key=run_key, domain=domain, destination=destination, ledger=ledger,
                                     rate_share=1 / workers, size_limit=self._size_limit(server_size),
                                     instants=instants, beacon=beacon, in1=shipment, passwords=passwords,
                                     base_dir=self.base_dir)
            report = send_distributed(frame, sender, workers)
        self.outcomes.update(report["status"])
        return spark_result(spark, report, props, self.name, stop)

    @staticmethod
    def _report(spark: Any, in0: Any, rows: list[DeliveryRow]) -> Any:
        if is_spark_frame(in0):
            return to_spark(spark if spark is not None else in0.sparkSession, rows)
        return to_pandas(rows)

