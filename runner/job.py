"""The main job: read data (a file or Spark SQL), optionally transform it with SQL, run the Email gem.

A job file::

    name: daily-delays
    source:
      path: data/flights.parquet        # csv, parquet or json (format from the suffix or `format`)
    transform: |
      SELECT * FROM source WHERE dep_delay >= 15
    params: {report_date: "2013-07-01"}
    email: { ...Email gem properties... }

Relative paths (``source.path``, ``email.ledger.path``, ``email.files[].path``) are relative to the job file, as a
fabric's paths are relative to the fabric file, so a scheduler may start the job from any
directory. ``${ENV_VAR}`` is interpolated.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from mailgem.connections.model import format_validation_error
from mailgem.fabric.errors import FabricConfigError
from mailgem.fabric.loader import load_yaml
from mailgem.fabric.model import Fabric

from mailgem.gems.email.gem import EmailGem
from mailgem.gems.email.properties import EmailProperties
from .source import SourceInfo, SourceSpec, inspect_source, read_source

__all__ = ["JobSpec", "SourceSpec", "load_job", "parse_job", "run_job", "read_source", "job_frame", "job_gem", "with_params"]

log = logging.getLogger("mailgem.job")

_MODEL = ConfigDict(frozen=True, extra="forbid")


class JobSpec(BaseModel):
    """A job: ``name``, ``source``, optional SQL ``transform`` (the source is the view ``source``),
    template ``params`` and the ``email`` gem's properties."""

    model_config = _MODEL
    name: str = Field(min_length=1)
    source: SourceSpec
    transform: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    email: EmailProperties

    _file: Path | None = PrivateAttr(default=None)

    @property
    def file(self) -> Path | None:
        """The job file this job was loaded from (``None`` when built in Python)."""
        return self._file

    @property
    def base_dir(self) -> Path:
        """Where relative paths start: the job file's folder, else the current directory."""
        return self._file.absolute().parent if self._file is not None else Path.cwd()

    def inspect_source(self) -> SourceInfo:
        """The source's resolved path, cheap schema and problems (:func:`mailgem.runner.source.inspect_source`)."""
        return inspect_source(self.source, self.base_dir, str(self._file or "job"))


def load_job(path: str | Path) -> JobSpec:
    """Load a job YAML file.

    Raises:
        FabricConfigError: file, YAML or validation problem, naming ``file: yaml.path``.
    """
    path = Path(path)
    return parse_job(load_yaml(path), path)


def parse_job(doc: dict[str, Any], path: Path) -> JobSpec:
    """Validate a job document read from ``path`` (relative paths start at its folder).

    Raises:
        FabricConfigError: a validation problem, naming ``file: yaml.path``.
    """
    try:
        job = JobSpec.model_validate(doc)
    except ValidationError as exc:
        raise FabricConfigError(format_validation_error(exc, str(path), doc)) from None
    ledger = job.email.ledger
    if ledger is not None and ledger.path is not None:
        ledger_path = _expand_user(ledger.path, f"{path}: email.ledger.path")
        if not ledger_path.is_absolute():
            resolved = str(path.absolute().parent / ledger_path)
            email = job.email.model_copy(update={"ledger": ledger.model_copy(update={"path": resolved})})
            job = job.model_copy(update={"email": email})
    job._file = path
    return job


def with_params(job: JobSpec, overrides: Mapping[str, Any]) -> JobSpec:
    """``job`` with ``overrides`` set in its ``params`` (a key given replaces the file's value,
    the others stay): a scheduler's run date, ``mailgem run --param KEY=VALUE``."""
    if not overrides:
        return job
    changed = job.model_copy(update={"params": {**job.params, **overrides}})
    changed._file = job._file
    return changed


def _expand_user(value: str, where: str) -> Path:
    """``value`` with a leading ``~`` or ``~user`` expanded.

    Raises:
        FabricConfigError: ``~user`` names no user of this machine (``where`` says which field).
    """
    try:
        return Path(value).expanduser()
    except RuntimeError:  # pathlib's "Could not determine home directory"
        raise FabricConfigError(f"{where}: {value!r} starts with ~, and there is no such user's home folder here: "
                                "write the path in full") from None


# Around each step of reading a job's frame: ``(step, its SQL)`` -> a context that may turn the
# step's errors into one line naming it (the CLI's and the UI's wording differ).
StepContext = Callable[[str, str | None], AbstractContextManager[object]]


def job_frame(job: JobSpec, spark: Any, info: SourceInfo | None = None, *, step: StepContext | None = None) -> Any:
    """The job's input to the gem: its source, through ``transform`` when given (a Spark DataFrame).

    Each step (``source``, then ``transform``) runs and is analysed inside ``step(name, sql)``,
    so Spark's errors surface in the step that caused them (default: as they are).
    """
    around = step if step is not None else (lambda name, sql: contextlib.nullcontext())
    with around("source", job.source.sql):
        frame = read_source(spark, job.source, info if info is not None else job.inspect_source())
        frame.columns  # noqa: B018 - analysis happens here, so its errors are the source's
    if job.transform:
        with around("transform", job.transform):
            frame.createOrReplaceTempView("source")
            frame = spark.sql(job.transform)
            frame.columns  # noqa: B018
    return frame


def job_gem(job: JobSpec, fabric: Fabric, connection: str | None = None, user: str | None = None) -> EmailGem:
    """The job's Email gem on ``fabric``, sending through ``connection`` (default: the job's own;
    ``mailgem --local`` and the UI pass the embedded server's ``local``)."""
    props = job.email
    if connection is not None and connection != props.connection:
        props = props.model_copy(update={"connection": connection})
    return EmailGem(props, fabric, user=user, name=job.name, params=job.params, base_dir=job.base_dir)


def run_job(job: JobSpec, fabric: Fabric, spark: Any, *, user: str | None = None) -> Any:
    """Run ``job`` against ``fabric`` and return the delivery report (a Spark DataFrame)."""
    frame = job_frame(job, spark)
    return job_gem(job, fabric, user=user).apply(spark, frame)
