"""A local SparkSession configured for mailgem jobs, tests and notebooks."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from mailgem.connections.errors import ConfigError

__all__ = ["require_pyspark", "local_spark", "connect_spark", "new_log_file", "quiet_python_loggers", "spark_error_line"]

_CONF = {
    "spark.ui.enabled": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


def driver_memory() -> str:
    """The heap of a JVM mailgem starts (``spark.driver.memory``; in local mode it also holds the
    executors): a quarter of this machine's memory, between 1 and 8 GB. PySpark's 1 GB default
    ran out collecting a re-run's delivery report of 1,000,000 rows (issue 27's scale run:
    ``OutOfMemoryError: Java heap space`` in ``toArrowBatchIterator``). ``--conf
    spark.driver.memory=...`` or ``$SPARK_DRIVER_MEMORY`` decides instead."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): PySpark's own default
        return "1g"
    return f"{min(8, max(1, physical // 4 // 1024**3))}g"


def require_pyspark() -> None:
    """Raise a clear error when PySpark is missing (it is the ``mailgem[spark]`` extra).

    Raises:
        ConfigError: PySpark cannot be imported.
    """
    import importlib.util

    if importlib.util.find_spec("pyspark") is None:
        raise ConfigError("this command reads its source with Spark, and PySpark is not installed: "
                          "pip install 'mailgem[spark]' (on a cluster, the runtime's own PySpark is used; a pandas "
                          "DataFrame needs no Spark: EmailGem(...).apply(frame))")


def local_spark(master: str = "local[2]", app_name: str = "mailgem", conf: dict[str, str] | None = None, *,
                log_file: str | Path | None = None) -> Any:
    """Get or create a SparkSession: UI off, UTC session time zone, Arrow transfers on, the JVM's
    heap from :func:`driver_memory` (when this call starts the JVM).

    ``PYSPARK_PYTHON`` is set to this interpreter so Python workers see the same packages.

    Args:
        log_file: when given and no JVM runs yet, the JVM's own output (start-up lines, log4j,
            stack traces, Python workers' stderr) goes to this file instead of the terminal.

    A JVM started here runs in a session of its own (with its Python workers): a terminal's
    Ctrl-C or a scheduler's signal to this process group reaches this process only, which
    stops its run cleanly (:mod:`mailgem.runner.cli.signals`), instead of killing Spark under it
    with stack traces. It still ends with this process (it exits when its stdin closes).
    """
    require_pyspark()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # loopback only; also silences the hostname warning
    from pyspark import SparkConf
    from pyspark.core.context import SparkContext
    from pyspark.sql import SparkSession

    settings = {"spark.master": master, "spark.app.name": app_name, **_CONF, **(conf or {})}
    if "SPARK_DRIVER_MEMORY" not in os.environ:
        settings.setdefault("spark.driver.memory", driver_memory())
    if SparkContext._gateway is None:
        from pyspark.java_gateway import launch_gateway

        # PySpark launches the JVM in this process group with the terminal as its stdout/stderr;
        # launched here, it gets a session of its own and (with log_file) writes to the log file.
        # The same settings go to spark-submit as PySpark would pass.
        with SparkContext._lock, (open(log_file, "ab") if log_file is not None else contextlib.nullcontext()) as out:
            if SparkContext._gateway is None:
                gateway = launch_gateway(SparkConf(loadDefaults=False).setAll(list(settings.items())),
                                         popen_kwargs={"stdout": out, "stderr": out, "start_new_session": True})
                SparkContext._gateway = gateway
                SparkContext._jvm = gateway.jvm
    builder = SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def connect_spark(url: str, app_name: str = "mailgem", conf: dict[str, str] | None = None) -> Any:
    """A Spark Connect session on the server at ``url`` (``sc://host:15002``, Spark 4's client
    mode: Databricks serverless, a shared cluster, a local ``start-connect-server.sh``).

    The URL may carry a token (``sc://host:443/;token=...``): it is never repeated in a message.
    ``conf``: session settings (``--conf``), set as the session is created.

    Raises:
        ConfigError: the Spark Connect client is not installed, or ``url`` is not an ``sc://`` URL.
    """
    import importlib.util

    require_pyspark()
    if not url.startswith("sc://"):
        raise ConfigError("a Spark Connect URL starts with sc://, e.g. sc://spark-connect.example.com:15002")
    missing = [m for m in ("grpc", "grpc_status", "google.rpc", "zstandard") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"the Spark Connect client needs {', '.join(missing)}: pip install 'mailgem[connect]'")
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.remote(url).appName(app_name)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def new_log_file() -> Path:
    """A new file for the JVM's output of one run (kept, so a failure can point at it)."""
    fd, name = tempfile.mkstemp(prefix="mailgem-spark-", suffix=".log")
    os.close(fd)
    return Path(name)


def quiet_python_loggers(verbose: bool) -> None:
    """PySpark's Python-side loggers stay quiet unless ``verbose``: py4j's chatter, and the SQL
    error loggers that print the JVM stack trace as JSON (mailgem prints the error's one line)."""
    logging.getLogger("py4j").setLevel(logging.WARNING)
    if verbose:
        return
    logging.getLogger("pyspark").setLevel(logging.ERROR)
    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        # Created here as disabled loggers; PySpark finds and uses them, and they drop every record.
        logging.getLogger(name).disabled = True


def spark_error_line(exc: BaseException) -> str:
    """The one useful line of a Spark error: its first line, without the JVM's ``SQLSTATE`` tail
    position details when they add nothing (``[UNRESOLVED_COLUMN...] ... Did you mean ...``)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return first.rstrip("; ").strip()
