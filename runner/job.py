"""The main job: read data (a file or Spark SQL), optionally transform it with SQL, run the Email gem.

A job file::

    name: daily-delays
    source:
      path: data/flights.parquet        # csv, parquet or json (format from the suffix or `format`)
    transform: |
      SELECT * FROM source WHERE dep_delay >= 15
    params: {report_date: "2013-07-01"}
    email: { ...Email gem properties... }

Two inputs (the Email gem's ``in0``, which makes the messages, and ``in1``, the data they
carry): ``sources`` instead of ``source``, two named sources in that order, each with its own
``transform`` in which the source is the view of its own name (as read); the second's may use
the first's view too::

    sources:
      recipients: {path: carrier_contacts.csv}
      data:
        path: data/flights.parquet
        transform: SELECT * FROM data WHERE dep_delay > 60
    email: {slice_by: {carrier: carrier}, attachments: [{from: in1}], ...}

Relative paths (``source.path``, ``sources.NAME.path``, ``email.ledger.path``, ``email.files[].path``) are
relative to the job file, as a fabric's paths are relative to the fabric file, so a scheduler may
start the job from any directory. ``${ENV_VAR}`` is interpolated.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from mailgem.connections.model import format_validation_error
from mailgem.fabric.errors import FabricConfigError
from mailgem.fabric.loader import load_yaml
from mailgem.fabric.model import Fabric

from mailgem.gems.email.gem import EmailGem
from mailgem.gems.email.properties import EmailProperties
from .source import SourceInfo, SourceSpec, inspect_source, read_source

__all__ = ["JobSpec", "SourceSpec", "NamedSource", "JobInput", "load_job", "parse_job", "run_job", "read_source", "job_frame",
           "job_frames", "job_gem", "with_params"]

log = logging.getLogger("mailgem.job")

_MODEL = ConfigDict(frozen=True, extra="forbid")


# A source's name is the name of its view in the transforms' SQL.
_VIEW_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class NamedSource(SourceSpec):
    """One of a job's two named ``sources``: a source and its own ``transform``."""

    transform: str | None = Field(default=None, description=(
        "Spark SQL over this source, which is the view of its own name (the second source's transform may use the "
        "first's view too)."))


class JobInput(NamedTuple):
    """One input of a job: its view ``name``, its ``spec``, its ``transform`` and the YAML path
    of the source (``source`` or ``sources.NAME``) and of the transform, for messages."""

    name: str
    spec: SourceSpec
    transform: str | None
    field: str
    transform_field: str


def _field_error(field: str, message: str) -> None:
    """Raise a rule's error at ``field`` (a model's own rule would be reported at its top level).

    Raises:
        ValidationError: always.
    """
    raise ValidationError.from_exception_data("JobSpec", [InitErrorDetails(
        type=PydanticCustomError("job_inputs", message), loc=(field,), input=None)])


class JobSpec(BaseModel):
    """A job: ``name``, ``source`` with an optional SQL ``transform`` (the source is the view
    ``source``) or two named ``sources`` (in0 and in1, each with its own ``transform``),
    template ``params`` and the ``email`` gem's properties."""

    model_config = _MODEL
    name: str = Field(min_length=1)
    source: SourceSpec | None = Field(default=None, description="The job's one input (or use sources).")
    sources: dict[str, NamedSource] | None = Field(default=None, description=(
        "Two named inputs instead of source: the first makes the messages (in0), the second is the data they carry "
        "(in1); each is a source with its own transform, in which it is the view of its name."))
    transform: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    email: EmailProperties

    _file: Path | None = PrivateAttr(default=None)

    @field_validator("sources")
    @classmethod
    def _two_named(cls, value: dict[str, NamedSource] | None) -> dict[str, NamedSource] | None:
        if value is None:
            return None
        if len(value) != 2:
            raise ValueError(f"names {len(value)} source(s); give exactly two: the first makes the messages (in0), the "
                             "second is the data they carry (in1); for one input use source")
        for name in value:
            if not _VIEW_NAME.match(name):
                raise ValueError(f"{name!r} cannot be a view's name in SQL: use letters, digits and _ (e.g. "
                                 f"{re.sub(r'[^A-Za-z0-9_]', '_', name).lstrip('0123456789') or 'data'})")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> JobSpec:
        if (self.source is None) == (self.sources is None):
            # Said at the field the file gave (sources: ~ is a mistake about sources).
            _field_error("sources" if "sources" in self.model_fields_set else "source",
                         "give source (one input) or sources (two named inputs: the messages' and the data they "
                         "carry), exactly one")
        if self.sources is not None and self.transform is not None:
            _field_error("transform", "with sources, each source has its own transform: move transform under "
                                      f"sources.{next(iter(self.sources))} (or the other source)")
        return self

    @property
    def inputs(self) -> list[JobInput]:
        """The job's inputs in order: ``in0`` (the messages), then ``in1`` when there are two."""
        if self.sources is None:
            assert self.source is not None
            return [JobInput("source", self.source, self.transform, "source", "transform")]
        return [JobInput(name, spec, spec.transform, f"sources.{name}", f"sources.{name}.transform")
                for name, spec in self.sources.items()]

    @property
    def file(self) -> Path | None:
        """The job file this job was loaded from (``None`` when built in Python)."""
        return self._file

    @property
    def base_dir(self) -> Path:
        """Where relative paths start: the job file's folder, else the current directory."""
        return self._file.absolute().parent if self._file is not None else Path.cwd()

    def inspect_source(self) -> SourceInfo:
        """The source's resolved path, cheap schema and problems (:func:`mailgem.runner.source.inspect_source`);
        with two ``sources``, the first's (``in0``)."""
        return self.inspect_sources()[0]

    def inspect_sources(self) -> list[SourceInfo]:
        """:meth:`inspect_source` of each input, in order; problems name ``sources.NAME.path``."""
        out = []
        for one in self.inputs:
            info = inspect_source(one.spec, self.base_dir, str(self._file or "job"))
            if one.field != "source":  # the reader's messages say source.path: say which source
                info.problems = [(severity, re.sub(r"\bsource\.(path|format|encoding|options|sql)\b",
                                                   rf"{one.field}.\1", message)) for severity, message in info.problems]
            out.append(info)
        return out


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
    """The job's input to the gem: its source, through ``transform`` when given (a Spark DataFrame);
    with two ``sources``, the first (``in0``; see :func:`job_frames` for both).

    Each step (``source``, then ``transform``) runs and is analysed inside ``step(name, sql)``,
    so Spark's errors surface in the step that caused them (default: as they are).
    """
    return _read_input(job, spark, job.inputs[0], info, step)


def job_frames(job: JobSpec, spark: Any, infos: list[SourceInfo | None] | None = None, *,
               step: StepContext | None = None) -> tuple[Any, Any]:
    """``(in0, in1)``: the job's inputs to the gem, each through its transform (Spark DataFrames);
    ``in1`` is ``None`` for a job with one ``source``. ``infos``: :meth:`JobSpec.inspect_sources`
    when already known. Steps are named ``sources.NAME`` and ``sources.NAME.transform``."""
    inputs = job.inputs
    known = list(infos or []) + [None] * len(inputs)
    frames = [_read_input(job, spark, one, known[i], step) for i, one in enumerate(inputs)]
    return frames[0], (frames[1] if len(frames) > 1 else None)


def _read_input(job: JobSpec, spark: Any, one: JobInput, info: SourceInfo | None, step: StepContext | None) -> Any:
    around = step if step is not None else (lambda name, sql: contextlib.nullcontext())
    with around(one.field, one.spec.sql):
        frame = read_source(spark, one.spec, info if info is not None else
                            inspect_source(one.spec, job.base_dir, str(job.file or "job")))
        frame.columns  # noqa: B018 - analysis happens here, so its errors are the source's
    if one.field != "source":
        frame.createOrReplaceTempView(one.name)  # the next source's transform may use it too
    if one.transform:
        with around(one.transform_field, one.transform):
            frame.createOrReplaceTempView(one.name)
            frame = spark.sql(one.transform)
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
    in0, in1 = job_frames(job, spark)
    return job_gem(job, fabric, user=user).apply(spark, in0, in1)
