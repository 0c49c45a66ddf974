"""The end of a run sent from Spark's executors: their report rows as the gem's Spark result."""

from __future__ import annotations

import logging
from typing import Any

from ..errors import DeliveryError, GemError
from ..properties import EmailProperties
from .report import SPARK_SCHEMA, skipped_row, to_spark
from .status import DeliveryStatus
from .stop import StopSignal

__all__ = ["spark_result"]

log = logging.getLogger("mailgem.gems")


def spark_result(spark: Any, report: Any, props: EmailProperties, name: str, stop: StopSignal | None) -> Any:
    """The delivery report (a pandas frame, one row per message, columns as
    :data:`~.report.SPARK_SCHEMA`) as a Spark DataFrame; an empty frame under ``on_empty: skip``
    is one ``skipped`` row.

    Raises:
        DeliveryError: a message failed and ``on_error`` is ``stop`` (not when a stop signal
            ended the run): carries the whole report.
    """
    if report.empty and props.on_empty == "skip":
        log.info("gem %s: frame is empty, nothing sent (on_empty: skip)", name)
        return to_spark(spark, [skipped_row("(none)", props.connection)])
    counts = report["status"].value_counts().to_dict()
    log.info("gem %s: %d messages: %s", name, len(report), ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    result = spark.createDataFrame(report, schema=SPARK_SCHEMA)
    failed = report[report["status"] == DeliveryStatus.FAILED]
    if props.on_error == "stop" and len(failed) and not (stop is not None and stop.stopping):
        first = failed.iloc[0]
        raise DeliveryError(f"gem {name!r}: message {first.message_key}: {first.error}", result,
                            GemError(str(first.error)))
    return result
