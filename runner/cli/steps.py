"""Steps the job commands (``run``, ``validate``, ``preview``) share: the pre-Spark checks, where
the messages go (the job's fabric, or the embedded local server), the gem, and Spark with its
errors reduced to one line."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mailgem.connections.errors import ConfigError, MailgemError
from mailgem.fabric.loader import LOCAL_CONNECTION
from mailgem.fabric.model import Fabric
from mailgem.gems.email.gem import EmailGem
from mailgem.runner.job import job_frames, job_gem
from mailgem.runner.preflight import Preflight, check_job

from .output import Output, record
from .parser import EXIT_CONFIG
from .signals import Signals

log = logging.getLogger("mailgem.runner")

__all__ = ["preflight", "param_overrides", "config_failure", "target", "make_gem", "start_spark", "spark_target", "read_frames", "spark_errors",
           "SparkJobError", "is_spark_error", "spark_failure"]


class SparkJobError(MailgemError):
    """Spark refused the job's source or SQL (exit 2)."""


def preflight(args: argparse.Namespace, out: Output, *, read_secrets: bool) -> Preflight:
    """Every check before Spark (:func:`mailgem.runner.preflight.check_job`), each finding printed once."""
    pre = check_job(args.job, fabric_file=args.fabric, local=getattr(args, "local", False), user=args.user,
                    read_secrets=read_secrets, params=param_overrides(args))
    for finding in pre.findings:
        out.note(f"mailgem: {finding}")
    return pre


def param_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The job's ``params`` set for this run: each ``--param KEY=VALUE`` read as a YAML scalar (as
    the job file's own values are: ``2024-01-31`` is a date, ``42`` a number), then the values a
    caller in Python passed as they are (``args.params``, :func:`~.call.run_job_file`).

    Raises:
        UsageError: a value is not a YAML scalar (a list or mapping, or not YAML at all).
    """
    import yaml

    from .output import UsageError

    values: dict[str, Any] = {}
    for key, text in getattr(args, "param", None) or []:
        if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):  # argv bytes that were not UTF-8 (surrogateescape)
            raise UsageError(f"--param {key}=...: the value is not valid UTF-8 text (bytes of another encoding?); "
                             "give it as UTF-8, or set it in the job file")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            raise UsageError(f"--param {key}=...: the value is not valid YAML; quote it for the shell and YAML, "
                             f"e.g. --param '{key}=\"text: with a colon\"'") from None
        if isinstance(value, (list, dict)):
            raise UsageError(f"--param {key}=...: the value must be one scalar (text, number, date, true/false), "
                             "not a list or mapping; set structured params in the job file")
        values[key] = value
    values.update(getattr(args, "params", None) or {})
    return values


def config_failure(args: argparse.Namespace, out: Output, errors: list[str], pre: Preflight | None = None) -> int:
    """Exit 2 after the pre-Spark checks found errors (already printed)."""
    fields = {"job": pre.job.name if pre and pre.job else str(getattr(args, "job", "")), "exit_code": EXIT_CONFIG,
              "errors": errors}
    record(args, fields)
    if getattr(args, "json", False):
        out.json_line(fields)
    else:
        out.note(f"mailgem: {len(errors)} problem(s); nothing was sent" if len(errors) > 1 else
                 "mailgem: nothing was sent")
    return EXIT_CONFIG


@contextlib.contextmanager
def target(args: argparse.Namespace, pre: Preflight, out: Output) -> Iterator[tuple[Fabric, Any, str]]:
    """The fabric to send through, the embedded server (or ``None``) and the connection's name."""
    from mailgem.fabric.local import local_fabric

    job = pre.job
    assert job is not None
    if not pre.local:
        assert pre.fabric is not None
        yield pre.fabric, None, job.email.connection
        return
    if job.email.connection != LOCAL_CONNECTION:
        out.note(f"--local: sending through the embedded local SMTP server instead of connection "
                 f"{job.email.connection!r}.")
    with local_fabric(getattr(args, "outbox", Path("outbox")), user=args.user) as local_run:
        yield local_run.fabric, local_run.server, LOCAL_CONNECTION


def make_gem(pre: Preflight, fabric: Fabric, connection: str, user: str | None) -> EmailGem:
    """The job's Email gem on ``fabric``, sending through ``connection``."""
    assert pre.job is not None
    return job_gem(pre.job, fabric, connection, user)


def start_spark(args: argparse.Namespace, app: str) -> tuple[Any, Path | None]:
    """A Spark Connect session (``--remote``), or a local SparkSession whose own output goes to a
    log file (unless ``-v``); the file is
    removed after the command unless an error points at it. A signal while it starts ends the
    command once it has (:meth:`Signals.held`)."""
    from mailgem.runner.spark import local_spark, new_log_file, quiet_python_loggers

    quiet_python_loggers(args.verbose)
    log_file = None if args.verbose else new_log_file()
    args.spark_log = log_file
    signals: Signals = args.signals
    master, remote = spark_target(args)
    conf = dict(getattr(args, "conf", None) or [])
    with signals.held():
        if remote:
            from mailgem.runner.spark import connect_spark

            spark = connect_spark(remote, app_name=f"mailgem:{app}", conf=conf)
        else:
            spark = local_spark(master, app_name=f"mailgem:{app}", conf=conf, log_file=log_file)
    return spark, log_file


def spark_target(args: argparse.Namespace) -> tuple[str, str | None]:
    """``(master, Spark Connect URL or None)``: ``--remote``, else ``--master``, else
    ``$SPARK_REMOTE`` (as PySpark reads it), else ``$MAILGEM_SPARK_MASTER``, else ``local[2]``.

    A local session asked for by ``--master`` while ``$SPARK_REMOTE`` is set takes it out of this
    process's environment (PySpark would refuse a master with it: "Remote cannot be specified
    with master").

    Raises:
        ConfigError: ``$SPARK_REMOTE`` and ``$MAILGEM_SPARK_MASTER`` are both set and no flag says which.
    """
    remote, master = getattr(args, "remote", None), getattr(args, "master", None)
    if remote:
        return "", remote
    env_remote, env_master = os.environ.get("SPARK_REMOTE"), os.environ.get("MAILGEM_SPARK_MASTER")
    if master is None and env_remote:
        if env_master:
            raise ConfigError(f"both $SPARK_REMOTE ({env_remote.split(';')[0]}) and $MAILGEM_SPARK_MASTER ({env_master}) "
                              "are set: unset one, or say which with --remote or --master")
        return "", env_remote
    if env_remote:
        log.info("--master %s: a local session; $SPARK_REMOTE is ignored for this command", master)
        os.environ.pop("SPARK_REMOTE")
    return master or env_master or "local[2]", None


def read_frames(args: argparse.Namespace, pre: Preflight, spark: Any, log_file: Path | None) -> tuple[Any, Any]:
    """``(in0, in1)``: the job's source through its ``transform`` (``in1``: ``None``), or its two
    named ``sources`` through theirs, analysed (a Spark error names the step)."""
    job = pre.job
    assert job is not None
    return job_frames(job, spark, [pre.source, pre.in1_source],
                      step=lambda what, sql: spark_errors(args, what, sql, log_file))


@contextlib.contextmanager
def spark_errors(args: argparse.Namespace, what: str, sql: str | None, log_file: Path | None) -> Iterator[None]:
    """Turn a Spark error into its one useful line, naming the job file, the step and the SQL."""
    try:
        yield
    except Exception as exc:
        if not is_spark_error(exc):
            raise
        where = f"\n  SQL: {' '.join(sql.split())}" if sql else ""
        line = spark_failure(args, exc, log_file, where, sep="\n  ")
        raise SparkJobError(f"{args.job}: {what}: {line}") from None


def is_spark_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("pyspark", "py4j"))


def spark_failure(args: argparse.Namespace, exc: BaseException, log_file: Path | None, detail: str = "",
                  sep: str = " ") -> str:
    """A Spark error's one useful line, ``detail`` (the SQL), and where Spark's own log is (kept
    for the user); with ``-v`` the full trace is printed first."""
    from mailgem.runner.spark import spark_error_line

    if args.verbose:
        traceback.print_exc()
    args.keep_spark_log = True
    more = f"{sep}(Spark's own log: {log_file}; -v shows the full trace)" if log_file else ""
    return f"{spark_error_line(exc)}{detail}{more}"
