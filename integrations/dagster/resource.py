"""``MailgemResource``: a Dagster resource that sends a frame with the Email gem.

As Python, in a definitions file::

    @asset
    def delays_email(mailgem: MailgemResource) -> MaterializeResult:
        report = mailgem.send(frame, to="ops@example.com", subject="{{ row_count }} late flights")
        return MaterializeResult(metadata=report_metadata(report))

    defs = Definitions(assets=[delays_email],
                       resources={"mailgem": MailgemResource(fabric="fabric.yaml", connection="reports-smtp")})

For development, ``MailgemResource(local=True)`` sends through the embedded local SMTP server
instead (every message lands as an ``.eml`` file in ``outbox/``): Dagster's usual swap of a
resource between deployments, as ``mailgem run --local`` is the command's.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import PrivateAttr

from mailgem.connections.errors import MailgemError
from mailgem.fabric.errors import AccessDeniedError, FabricConfigError, SecretNotFoundError
from mailgem.fabric.loader import LOCAL_CONNECTION, load_fabric
from mailgem.fabric.model import Fabric
from mailgem.gems.email.errors import DeliveryError, GemValidationError, MessageCapError
from mailgem.gems.email.gem import EmailGem

from .outcome import DURATION_ATTR, failure_description, report_metadata
from .stopping import stop_on_signal

try:
    import dagster as dg
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError("Dagster is not installed, run `pip install 'mailgem[dagster]'`") from exc

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame

__all__ = ["MailgemResource", "ResourceConfigError"]


# Mistakes found before anything is sent, which a retry would meet again: the step fails with the
# message and no retry. (A secret store that cannot be reached, SecretStoreError, may recover.)
_BEFORE_SENDING = (GemValidationError, MessageCapError, FabricConfigError, AccessDeniedError, SecretNotFoundError)


class ResourceConfigError(MailgemError, ValueError):
    """The resource's settings, or a ``send`` call's, contradict each other (the message says how
    to fix them). Raised before anything is read or sent."""


class MailgemResource(dg.ConfigurableResource):
    """Sends a pandas or Spark frame through a fabric's SMTP connection and returns the delivery
    report.

    Attributes:
        fabric: path of the fabric YAML (teams, secret store, connections); Dagster's
            ``EnvVar("MAILGEM_FABRIC")`` reads it from the environment at run time. Loaded when a
            run starts, so a mistake in it fails the run before any asset sends. Not needed with
            ``local``.
        connection: the fabric connection to send through, unless a ``send`` names one (naming
            a different one in both places is an error: one place decides where mail goes).
        user: who sends (default: ``$MAILGEM_USER``, else the operating-system login); the
            fabric's teams decide whether they may use the connection.
        local: send through the embedded local SMTP server instead (127.0.0.1, STARTTLS and
            AUTH with development credentials made for the run, every message written to
            ``outbox``): for development, never reaches anyone. A ``connection`` named ``local``
            means the same, as in a job file.
        outbox: the folder the embedded server writes ``.eml`` files to (``local`` only),
            relative to the working directory.
    """

    fabric: str | None = None
    connection: str | None = None
    user: str | None = None
    local: bool = False
    outbox: str = "outbox"

    # The fabric a run opened (setup); None outside a run, where each send opens its own.
    _fabric: Fabric | None = PrivateAttr(default=None)

    @contextlib.contextmanager
    def yield_for_execution(self, context: Any) -> Iterator[MailgemResource]:
        """For one Dagster run (or step process): load the fabric, or start the embedded server,
        which stops when the run's steps are done."""
        with self._opened_fabric() as fabric:
            self._fabric = fabric
            try:
                yield self
            finally:
                self._fabric = None

    def send(self, frame: pd.DataFrame | SparkDataFrame, /, *, name: str | None = None,
             params: dict[str, Any] | None = None, raise_on_failure: bool = True, in1: Any = None,
             **email_properties: Any) -> pd.DataFrame:
        """Send ``frame`` as email and return the delivery report.

        Args:
            frame: a pandas or Spark DataFrame (Spark needs ``mailgem[spark]``); columns as the
                properties use them.
            name: the gem's name: in messages, in templates (``job``) and in the send ledger's keys
                (default: the asset's op name inside a run, so two assets sharing a ledger never
                take each other's messages for their own; ``email`` outside a run).
            params: extra template values (``params.x``).
            raise_on_failure: raise ``dagster.Failure`` when a message was not delivered whole
                (see below); ``False`` returns the report and leaves the decision to the caller.
            in1: the gem's second input, a frame of the same kind as ``frame`` (the data the
                messages carry: ``slice_by``, ``attachments[].from: in1``, ``table.from: in1``).
            **email_properties: the Email gem's properties, as in a job file's ``email:`` block
                (``to``, ``subject``, ``text_body``, ``mode``, ``ledger``, ...); ``connection``
                may be left out when the resource names it.

        Returns:
            the delivery report as a pandas DataFrame (a Spark frame's is collected to the driver),
            one row per message (columns: :mod:`mailgem.gems.email.run.report`), with
            ``report.attrs["duration_s"]``: the seconds the send took.
            :func:`~mailgem.dagster.report_metadata` turns it into the asset's metadata.

        Raises:
            dagster.Failure: a property is wrong (a missing column, a template error, a bad
                address...), the run would pass ``max_messages``, the fabric has no such
                connection, the user may not use it or its secret is missing: nothing was sent,
                and no retry is allowed (a retry would fail the same way). Or, with ``raise_on_failure``,
                a message failed, was partly refused, deferred or not started: the description
                lists them, the metadata has the counts; retries are allowed only with a
                ``ledger`` (without one, a retry would send the delivered messages again).
                A terminated run (SIGTERM or SIGINT while sending) starts no new message,
                finishes those being written and fails with the rest ``not_started``, whatever
                ``raise_on_failure`` says; a second signal ends the step at once (Dagster's).
            ResourceConfigError: the resource and the call disagree on the connection, or
                neither names one, or there is no fabric and ``local`` is off.
            SecretStoreError: the fabric's secret store could not be read (it may recover: Dagster
                may retry).
        """
        properties = self._properties(email_properties)
        started = time.perf_counter()
        with self._run_fabric() as fabric, stop_on_signal() as stop:
            gem = self._gem(properties, fabric, name or _step_name() or "email", params)
            try:
                report = _as_pandas(gem.apply(frame, in1=in1, stop=stop))
            except _BEFORE_SENDING as exc:
                raise dg.Failure(description=f"{exc}\nNothing was sent.", allow_retries=False) from exc
            except DeliveryError as exc:  # on_error: stop; the report has every message handled
                report = _as_pandas(exc.report)
        report.attrs[DURATION_ATTR] = time.perf_counter() - started
        self._log(report)
        description = failure_description(report)
        if description is not None and (raise_on_failure or stop.stopping):  # a terminated run ends here
            raise dg.Failure(description=description, metadata=report_metadata(report),
                             allow_retries=properties.get("ledger") is not None)
        return report

    # -- where mail goes ------------------------------------------------------------------------

    def _is_local(self) -> bool:
        return self.local or self.connection == LOCAL_CONNECTION

    def _properties(self, given: dict[str, Any]) -> dict[str, Any]:
        """The gem's properties with the connection this resource decides (checked, not sent)."""
        named = given.get("connection")
        if named and self.connection and named != self.connection:
            raise ResourceConfigError(
                f"send(connection={named!r}) differs from the resource's connection {self.connection!r}: "
                "name the connection in one place (the resource, or each send with the resource's left unset)")
        connection = named or self.connection
        if self._is_local():
            if connection and connection != LOCAL_CONNECTION:
                _logger().info("local: sending through the embedded local SMTP server instead of connection %r", connection)
            connection = LOCAL_CONNECTION
        if not connection:
            raise ResourceConfigError("no connection to send through: set MailgemResource(connection=...) or pass "
                                      "send(..., connection=...); local=True sends through the embedded local server")
        return {**given, "connection": connection}

    def _gem(self, properties: dict[str, Any], fabric: Fabric, name: str, params: dict[str, Any] | None) -> EmailGem:
        try:
            return EmailGem(properties, fabric, user=self.user, name=name, params=params)
        except GemValidationError as exc:
            raise dg.Failure(description=f"{exc}\nNothing was sent.", allow_retries=False) from exc

    @contextlib.contextmanager
    def _run_fabric(self) -> Iterator[Fabric]:
        """The fabric of the run this send belongs to, else one opened for this send alone."""
        if self._fabric is not None:
            yield self._fabric
            return
        with self._opened_fabric() as fabric:
            yield fabric

    @contextlib.contextmanager
    def _opened_fabric(self) -> Iterator[Fabric]:
        if self._is_local():
            from mailgem.fabric.local import local_fabric

            with local_fabric(self.outbox, user=self.user) as local_run:
                yield local_run.fabric
            return
        if not self.fabric:
            raise ResourceConfigError("MailgemResource needs fabric= (the fabric YAML's path, e.g. "
                                      "EnvVar('MAILGEM_FABRIC')), or local=True for the embedded local SMTP server")
        yield load_fabric(self.fabric)

    def _log(self, report: pd.DataFrame) -> None:
        # Counts and the connection only: recipients and errors are in the report and the metadata.
        metadata = report_metadata(report)
        not_counts = ("messages", DURATION_ATTR, "connection", "errors")
        counts = ", ".join(f"{n} {status}" for status, n in metadata.items() if status not in not_counts)
        _logger().info(
            f"{metadata['messages']} message(s) through {metadata.get('connection', '?')} "
            f"in {metadata.get(DURATION_ATTR, 0):.2f} s: {counts}")


def _step_name() -> str | None:
    """The name of the op (an asset's op is named after its key) whose step is running, if any."""
    try:
        context = dg.OpExecutionContext.get()
    except dg.DagsterInvariantViolationError:  # not inside a step
        return None
    return str(context.op_def.name)


def _logger() -> logging.Logger:
    # Dagster's logger: its lines go to the run's event log (and the compute logs).
    logger: logging.Logger = dg.get_dagster_logger("mailgem")  # Any to a checker without Dagster
    return logger


def _as_pandas(report: Any) -> pd.DataFrame:
    # A Spark frame's report is a Spark DataFrame (one row per message): collected here, so every
    # caller reads the same shape.
    return report if isinstance(report, pd.DataFrame) else report.toPandas()
