"""A local SparkSession configured for mailgem jobs, tests and notebooks."""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["local_spark"]


def local_spark(master: str = "local[2]", app_name: str = "mailgem", conf: dict[str, str] | None = None) -> Any:
    """Get or create a SparkSession: UI off, UTC session time zone, Arrow transfers on.

    ``PYSPARK_PYTHON`` is set to this interpreter so Python workers see the same packages.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # loopback only; also silences the hostname warning
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(master).appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.extraJavaOptions", "-Dlog4j.rootLogger=ERROR")
    )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
