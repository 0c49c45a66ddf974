"""What a gem may ask of a Spark session without the JVM (Spark Connect has none): its kind and
how many Python workers send at once. Starting a session is the runner's job (:mod:`mailgem.runner.spark`)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

__all__ = ["is_connect", "parallelism", "parallelism_from_conf"]

_LOCAL = re.compile(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?$")


def is_connect(spark: Any) -> bool:
    """Whether ``spark`` is a Spark Connect session (Spark 4's client mode: no JVM in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def parallelism(spark: Any) -> int:
    """How many Python workers send at once: Spark's default parallelism.

    A classic session asks its SparkContext. Spark Connect has none (nothing here may need the
    JVM), so it comes from configuration: ``spark.default.parallelism`` when set; else the
    master (``local`` 1, ``local[N]`` N, ``local[*]`` this machine's cores; ``local-cluster[n,c,m]``
    n×c); else ``spark.executor.instances`` × ``spark.executor.cores``; else 2 (the rate limits
    are then shared by at least as many workers as run, erring on the safe side only if more run).
    """
    if not is_connect(spark):
        return max(1, spark.sparkContext.defaultParallelism)

    def conf(key: str) -> str | None:
        try:
            return spark.conf.get(key, None)
        except Exception:  # noqa: BLE001 - a setting the server will not show is a setting we do not have
            return None

    return parallelism_from_conf(conf)


def parallelism_from_conf(conf: Callable[[str], str | None]) -> int:
    """:func:`parallelism` from configuration alone (``conf(key)``: the value, or ``None``)."""
    if (value := conf("spark.default.parallelism")) and value.isdigit():
        return max(1, int(value))
    master = (conf("spark.master") or "").strip()
    if (local := _LOCAL.match(master)) is not None:
        n = local.group(1)
        return (os.cpu_count() or 1) if n == "*" else int(n or 1)
    if (cluster := re.match(r"local-cluster\[(\d+),\s*(\d+),", master)) is not None:
        return int(cluster.group(1)) * int(cluster.group(2))
    instances, cores = conf("spark.executor.instances"), conf("spark.executor.cores")
    if instances and cores and instances.isdigit() and cores.isdigit():
        return int(instances) * int(cores)
    return 2
