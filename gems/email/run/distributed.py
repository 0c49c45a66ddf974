"""Spark-distributed sending: messages are built and sent on the executors.

``mapInPandas`` hands each Python worker its partition as pandas batches; the worker composes
and sends them with its own pool and its share (1 / parallelism) of the connection's rate
limits, and returns delivery report rows. Only those rows come back to the driver, which never
collects the input frame. For ``per_group``, rows are first repartitioned by the group columns
so each group lives in one partition. A ``TIMESTAMP`` column reaches the workers as
microseconds since the epoch (a pandas batch would hold session wall time, ambiguous for an
hour a year) and is shown in ``formats.timezone``, else in the driver's session zone.

A second input (``in1``, see :mod:`.in1`) travels whole with the sender when there is no
``slice_by`` (collected once on the driver: it must fit in the driver's memory, and every
message carries it anyway); with ``slice_by`` Spark joins each ``in0`` row's ``in1`` rows to it
(an array of structs) and the worker turns them back into each message's ``in1``.

The report is collected once on the driver, so sending can never run twice because a lazy
DataFrame was evaluated twice. Nothing a worker meets takes the Spark job down: a message's
problem is its failed row, and a partition that cannot be read becomes one failed row that says why.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from pydantic import SecretStr

from mailgem.connections.delivery import Deliverer
from mailgem.connections.transport import SmtpTransport

from ..content.compose import Composer
from ..data import collect, instants, normalise, spark_instant_columns, zoned
from .in1 import IN1_COLUMN, In1Rows, In1Shipment, attach_in1, attached_schema, split_attached
from .ledger import LedgerTarget, SendLedger
from .plan import units
from ..properties import EmailProperties
from .report import SPARK_SCHEMA, DeliveryRow, to_pandas, with_nullable_ints
from .sender import SendContext, StopRun, describe_error, send_units
from .status import DeliveryStatus
from .stop import BeaconAddress, StopListener, StopSignal

__all__ = ["PartitionSender", "send_distributed", "ship_in1"]

log = logging.getLogger("mailgem.gems")


class PartitionSender:
    """The function ``mapInPandas`` runs on each partition (picklable: plain data only).

    ``in1`` (:func:`ship_in1`): the second input. Without ``slice_by`` it holds all of ``in1``,
    collected on the driver and pickled with the sender, so a whole ``in1`` must fit in the
    driver's memory (every message carries it anyway); with ``slice_by`` it holds only the
    schema of the rows Spark attached to each ``in0`` row."""

    def __init__(self, props: EmailProperties, transports: list[SmtpTransport], *, job: str, params: dict[str, Any],
                 run_ts: dt.datetime, run_key: str, domain: str, destination: str, ledger: LedgerTarget | None,
                 rate_share: float, size_limit: int | None = None, instants: tuple[list[str], str] = ([], "UTC"),
                 beacon: BeaconAddress | None = None, passwords: dict[str, SecretStr] | None = None,
                 base_dir: Path | None = None, in1: In1Shipment | None = None) -> None:
        self.props = props
        self.transports = transports
        self.job = job
        self.params = params
        self.run_ts = run_ts
        self.run_key = run_key
        self.domain = domain
        self.destination = destination
        self.ledger = ledger  # with its password resolved on the driver, like the transports
        self.rate_share = rate_share
        self.size_limit = size_limit
        self.instants = instants  # (TIMESTAMP columns, the driver's session zone)
        self.beacon = beacon  # where the driver says "stop" (a scheduler's SIGTERM), if it can
        # protect's passwords, read on the driver (SecretStr: pickled to the workers, never shown)
        self.passwords = passwords if passwords is not None else {}
        self.base_dir = base_dir  # where relative files paths start: the same path must be readable here
        self.in1 = in1  # the second input, if any (see ship_in1)

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        props = self.props
        primary = self.transports[0].connection
        loop = asyncio.new_event_loop()
        stop = StopSignal()  # this partition's: the driver's beacon requests it
        deliverer = Deliverer(self.transports, rate_share=self.rate_share, gate=stop, check_sender=True)
        ledger = None
        try:
            ledger = SendLedger(self.ledger, self.job, self.run_key, self.destination) if self.ledger else None
            composer = Composer(props, job=self.job, params=self.params, charset=primary.charset, run_ts=self.run_ts,
                                special_domains=primary.allowed_special_domains, size_limit=self.size_limit,
                                passwords=self.passwords, base_dir=self.base_dir)
            ctx = SendContext(composer, self.job, self.run_key, self.domain, primary.name, ledger,
                              stop_on_error=props.on_error == "stop", envelope_ids=primary.dsn is not None, stop=stop)
            with StopListener(self.beacon, stop):
                yield from self._partition(batches, loop, ctx, deliverer)
        except Exception as exc:  # noqa: BLE001 - reported as a row, never a failed Spark job
            log.exception("a partition could not be sent")
            yield to_pandas([DeliveryRow("(partition)", DeliveryStatus.FAILED, connection=primary.name, error_type=type(exc).__name__,
                                         error=describe_error(exc, "reading this Spark partition"))])
        finally:
            loop.run_until_complete(deliverer.aclose())
            loop.close()
            if ledger is not None:
                ledger.close()

    def _partition(self, batches: Iterator[pd.DataFrame], loop: asyncio.AbstractEventLoop, ctx: SendContext,
                   deliverer: Deliverer) -> Iterator[pd.DataFrame]:
        props = self.props
        if props.mode == "per_group":
            # A partition holds whole groups (repartitioned by the group columns).
            frames = [f for f in batches if len(f)]
            tables: Iterable[pa.Table] = (
                [pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False)] if frames else [])
        else:
            tables = (pa.Table.from_pandas(f, preserve_index=False) for f in batches if len(f))
        for table in tables:
            try:
                table, in1 = self._in1(table)
                table, key_zones = self._table(table)
                work = send_units(units(table, props, key_zones=key_zones, in1=in1), ctx, deliverer,
                                  concurrency=deliverer.in_flight)
                yield to_pandas(loop.run_until_complete(work))
            except StopRun as exc:
                yield to_pandas(exc.rows)
                if exc.fatal or ctx.stop_on_error:
                    break

    def _in1(self, batch: pa.Table) -> tuple[pa.Table, In1Rows | None]:
        """The batch without its attached ``in1`` rows, and the ``in1`` its messages carry."""
        ship = self.in1
        if ship is None:
            return batch, None
        if ship.schema is not None and IN1_COLUMN in batch.column_names:
            batch, attached = split_attached(batch, ship.schema, list(self.props.slice_by or {}))
            return batch, In1Rows(self._table(attached, ship.instants)[0], self.props.slice_by)
        if ship.whole is not None:
            return batch, In1Rows(ship.whole, None)
        return batch, In1Rows(pa.table({}), None)  # not reached: attach_in1 adds the column to every batch

    def _table(self, batch: pa.Table, names: list[str] | None = None) -> tuple[pa.Table, dict[str, tuple[str, bool]]]:
        """A batch as the composer takes it (see :mod:`mailgem.gems.email.data`), and its key
        zones: message keys had a ``TIMESTAMP`` as session wall time (naive), or as an instant
        in the session zone with ``formats.timezone``, as earlier versions gave them.
        ``names``: its ``TIMESTAMP`` columns (default: ``in0``'s)."""
        session = self.instants[1]
        table = instants(normalise(batch), self.instants[0] if names is None else names)
        timezone = self.props.formats.timezone
        return zoned(table, timezone or session, key_zone=session, key_aware=timezone is not None)


def as_micros(frame: Any, columns: list[str]) -> Any:
    """``frame`` with its ``columns`` (``TIMESTAMP``) as microseconds since the epoch (``BIGINT``)."""
    if not columns:
        return frame
    from pyspark.sql import functions as F

    def col(name: str) -> Any:
        return F.col("`" + name.replace("`", "``") + "`")

    return frame.select(*[F.unix_micros(col(c)).alias(c) if c in columns else col(c) for c in frame.columns])


def ship_in1(frame: Any, in1: Any, props: EmailProperties) -> tuple[Any, In1Shipment | None]:
    """``frame`` (``in0``) and what the executors need of ``in1`` (see the module docstring): with
    ``slice_by``, ``frame`` with each row's ``in1`` rows attached by a Spark join."""
    if in1 is None:
        return frame, None
    if not props.slice_by:
        return frame, In1Shipment(whole=collect(in1, all_rows=True, head_rows=0, timezone=props.formats.timezone).table)
    names = spark_instant_columns(in1)
    shipment = In1Shipment(schema=attached_schema(in1, names), instants=names)
    return attach_in1(frame, in1, props.slice_by, names), shipment


def send_distributed(frame: Any, sender: PartitionSender, workers: int) -> pd.DataFrame:
    """Run ``sender`` over ``frame``'s partitions, spread over ``workers`` (:func:`mailgem.gems.spark_info.parallelism`);
    return the delivery report rows (pandas)."""
    props = sender.props
    # Rows are always spread over the executor cores, so every core sends (a small file is one
    # partition). Counting the frame's partitions first is no cheaper: with adaptive query
    # execution, a plan with a shuffle runs its upstream to know them (and Spark Connect has no
    # RDD to ask). The shuffle costs far less than sending what it spreads.
    if props.mode == "per_group":
        frame = frame.repartition(workers, *props.group_by)
    else:
        frame = frame.repartition(workers)
    frame = as_micros(frame, sender.instants[0])
    return with_nullable_ints(frame.mapInPandas(sender, schema=SPARK_SCHEMA).toPandas())
