"""Spark-distributed sending: messages are built and sent on the executors.

``mapInPandas`` hands each Python worker its partition as pandas batches; the worker composes
and sends them with its own pool and its share (1 / parallelism) of the connection's rate
limits, and returns delivery report rows. Only those rows come back to the driver, which never
collects the input frame. For ``per_group``, rows are first repartitioned by the group columns
so each group lives in one partition.

The report is collected once on the driver, so sending can never run twice because a lazy
DataFrame was evaluated twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pyarrow as pa

from connections.delivery import Deliverer
from connections.transport import SmtpTransport

from .compose import Composer
from .data import normalise
from .ledger import SendLedger
from .plan import units
from .properties import EmailProperties
from .report import SPARK_SCHEMA, DeliveryRow, to_pandas, with_nullable_ints
from .sender import SendContext, StopRun, send_units

__all__ = ["PartitionSender", "send_distributed"]

log = logging.getLogger("mailgem.gems")


class PartitionSender:
    """The function ``mapInPandas`` runs on each partition (picklable: plain data only)."""

    def __init__(self, props: EmailProperties, transports: list[SmtpTransport], *, job: str, params: dict[str, Any],
                 run_ts: dt.datetime, run_key: str, domain: str, rate_share: float) -> None:
        self.props = props
        self.transports = transports
        self.job = job
        self.params = params
        self.run_ts = run_ts
        self.run_key = run_key
        self.domain = domain
        self.rate_share = rate_share

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        props = self.props
        primary = self.transports[0].connection
        loop = asyncio.new_event_loop()
        deliverer = Deliverer(self.transports, rate_share=self.rate_share)
        ledger = SendLedger(props.ledger.path, self.job, self.run_key) if props.ledger else None
        composer = Composer(props, job=self.job, params=self.params, charset=primary.charset, run_ts=self.run_ts)
        ctx = SendContext(composer, self.job, self.run_key, self.domain, primary.name, ledger,
                          stop_on_error=props.on_error == "stop")
        try:
            if props.mode == "per_group":
                # A partition holds whole groups (repartitioned by the group columns).
                frames = [f for f in batches if len(f)]
                tables = [pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False)] if frames else []
            else:
                tables = (pa.Table.from_pandas(f, preserve_index=False) for f in batches if len(f))
            for table in tables:
                rows = self._send(loop, units(normalise(table), props), ctx, deliverer)
                yield to_pandas(rows)
                if any(r.status == "failed" for r in rows) and ctx.stop_on_error:
                    break
        finally:
            loop.run_until_complete(deliverer.aclose())
            loop.close()
            if ledger is not None:
                ledger.close()

    def _send(self, loop: asyncio.AbstractEventLoop, work: Any, ctx: SendContext, deliverer: Deliverer) -> list[DeliveryRow]:
        try:
            return loop.run_until_complete(send_units(work, ctx, deliverer, concurrency=self.transports[0].connection.pool_size))
        except StopRun as exc:
            return exc.rows


def send_distributed(spark: Any, frame: Any, sender: PartitionSender) -> pd.DataFrame:
    """Run ``sender`` over ``frame``'s partitions; return the delivery report rows (pandas)."""
    props = sender.props
    if props.mode == "per_group":
        frame = frame.repartition(spark.sparkContext.defaultParallelism, *props.group_by)
    return with_nullable_ints(frame.mapInPandas(sender, schema=SPARK_SCHEMA).toPandas())
