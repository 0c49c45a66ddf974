"""The main job: read data (a file or Spark SQL), optionally transform it with SQL, run the Email gem.

A job file::

    name: daily-delays
    source:
      path: data/flights.parquet        # csv, parquet or json (format from the suffix or `format`)
    transform: |
      SELECT * FROM source WHERE dep_delay >= 15
    params: {report_date: "2013-07-01"}
    email: { ...Email gem properties... }

Relative paths are relative to the current directory. ``${ENV_VAR}`` is interpolated.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from connections.model import format_validation_error
from fabric.errors import FabricConfigError
from fabric.loader import load_yaml
from fabric.model import Fabric

from .email.gem import EmailGem
from .email.properties import EmailProperties

__all__ = ["JobSpec", "SourceSpec", "load_job", "run_job", "read_source"]

log = logging.getLogger("mailgem.job")

_MODEL = ConfigDict(frozen=True, extra="forbid")


class SourceSpec(BaseModel):
    """Where the data comes from: a file ``path`` (csv, parquet, json) or a Spark SQL ``sql`` query."""

    model_config = _MODEL
    path: str | None = None
    format: Literal["csv", "parquet", "json"] | None = None
    options: dict[str, str] = Field(default_factory=dict, description="Spark reader options (CSV defaults: header, inferSchema).")
    sql: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SourceSpec:
        if (self.path is None) == (self.sql is None):
            raise ValueError("give exactly one of source.path (a csv/parquet/json file) or source.sql (a Spark SQL query)")
        if self.path is not None and self.format is None and Path(self.path).suffix.lower().lstrip(".") not in {"csv", "parquet", "json"}:
            raise ValueError(f"cannot tell the format of {self.path!r} from its suffix: set source.format to csv, parquet or json")
        return self


class JobSpec(BaseModel):
    """A job: ``name``, ``source``, optional SQL ``transform`` (the source is the view ``source``),
    template ``params`` and the ``email`` gem's properties."""

    model_config = _MODEL
    name: str = Field(min_length=1)
    source: SourceSpec
    transform: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    email: EmailProperties


def load_job(path: str | Path) -> JobSpec:
    """Load a job YAML file.

    Raises:
        FabricConfigError: file, YAML or validation problem, naming ``file: yaml.path``.
    """
    doc = load_yaml(Path(path))
    try:
        return JobSpec.model_validate(doc)
    except ValidationError as exc:
        raise FabricConfigError(format_validation_error(exc, str(path))) from None


def read_source(spark: Any, source: SourceSpec) -> Any:
    """The source as a Spark DataFrame.

    Raises:
        FabricConfigError: the file does not exist.
    """
    if source.sql is not None:
        return spark.sql(source.sql)
    assert source.path is not None
    if not Path(source.path).exists():
        raise FabricConfigError(f"source.path {source.path!r} does not exist")
    fmt = source.format or Path(source.path).suffix.lower().lstrip(".")
    reader = spark.read
    options = ({"header": "true", "inferSchema": "true"} if fmt == "csv" else {}) | source.options
    return reader.options(**options).format(fmt).load(source.path)


def run_job(job: JobSpec, fabric: Fabric, spark: Any, *, user: str | None = None) -> Any:
    """Run ``job`` against ``fabric`` and return the delivery report (a Spark DataFrame)."""
    frame = read_source(spark, job.source)
    if job.transform:
        frame.createOrReplaceTempView("source")
        frame = spark.sql(job.transform)
    gem = EmailGem(job.email, fabric, user=user, name=job.name, params=job.params)
    return gem.apply(spark, frame)
