"""Faster JVM start-ups for the suite's Spark runs (test infrastructure only; users' runs are unchanged).

Every ``mailgem run`` a test starts launches a JVM of its own, and on this 2-core machine a JVM
spends ~9 s starting Spark and ~7 s on its first query, mostly loading classes and compiling them
with both JIT tiers, which a short run never profits from. For the session:

* ``-XX:TieredStopAtLevel=1``: C1 only (about half the JVM's CPU in a short run);
* a class-data-sharing archive of the classes a small Spark run loads (JDK 13+ dynamic CDS,
  ``-XX:ArchiveClassesAtExit``), made once per session by a run in the background while the first
  tests go on, then used by every JVM started after it is ready (``-XX:SharedArchiveFile``).

Measured: start-up 9.5 → 5.4 s and the first query 6.8 → 3.7 s. ``SPARK_SUBMIT_OPTS`` reaches the
driver JVM spark-submit launches (the session's and each CLI run's), not its launcher's. A JVM
whose class path differs from the archive's (a Spark Connect server) runs without it. A
``SPARK_SUBMIT_OPTS`` already set is left as it is, and nothing is done without Java 13+ or PySpark.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_DUMP = """
from mailgem.runner.spark import local_spark
spark = local_spark("local[2]", app_name="mailgem-cds")
spark.range(100).selectExpr("id", "id % 3 AS k", "concat('u', id) AS s").createOrReplaceTempView("t")
spark.sql("SELECT k, count(*) AS n FROM t GROUP BY k ORDER BY k").toPandas()
spark.createDataFrame(spark.range(10).toPandas()).repartition(2).mapInPandas(lambda it: it, "id long").toPandas()
spark.stop()
from pyspark.core.context import SparkContext
jvm = SparkContext._gateway.proc  # the archive is written as the JVM exits: wait for it
jvm.stdin.close()
jvm.wait(timeout=300)
"""

_folder: Path | None = None
_dump: subprocess.Popen[bytes] | None = None


def _java_major() -> int:
    java = shutil.which("java", path=(os.environ.get("JAVA_HOME", "") + "/bin:" + os.environ.get("PATH", "")))
    if java is None:
        return 0
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError):
        return 0
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not found:
        return 0
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def begin() -> None:
    """Set C1-only JIT for every JVM the session starts, and start making the archive."""
    global _folder, _dump
    if "SPARK_SUBMIT_OPTS" in os.environ or importlib.util.find_spec("pyspark") is None or _java_major() < 13:
        return
    os.environ["SPARK_SUBMIT_OPTS"] = "-XX:TieredStopAtLevel=1"
    _folder = Path(tempfile.mkdtemp(prefix="mailgem-tests-cds-"))
    env = {**os.environ, "SPARK_SUBMIT_OPTS": f"-XX:TieredStopAtLevel=1 -XX:ArchiveClassesAtExit={_folder / 'spark.jsa'}"}
    _dump = subprocess.Popen([sys.executable, "-c", _DUMP], env=env, cwd=_folder,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def poll() -> None:
    """Once the archive is made, let every JVM started from now on use it."""
    global _dump
    if _dump is None or _dump.poll() is None:
        return
    archive = _folder / "spark.jsa" if _folder is not None else None
    if _dump.returncode == 0 and archive is not None and archive.is_file():
        os.environ["SPARK_SUBMIT_OPTS"] += f" -XX:SharedArchiveFile={archive}"
    _dump = None


def end() -> None:
    """Stop the archive's run if it still goes, and remove the archive."""
    if _dump is not None and _dump.poll() is None:
        _dump.kill()
        _dump.wait(timeout=30)
    if _folder is not None:
        shutil.rmtree(_folder, ignore_errors=True)
