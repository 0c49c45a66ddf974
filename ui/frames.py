"""The job's input frame for the UI: read once, kept while the UI runs.

A preview re-renders on every edit of the Email gem's properties; reading the source (and
starting Spark) each time would take seconds. :class:`FrameCache` keeps the frame, keyed by
what determines its data: the job's ``source``, its ``transform`` and the job file's folder
(relative paths start there). An edit of ``email:`` reuses the kept frame; an edit of the source
or the transform reads again, and so does a new export of the source file (its modification time
or size changed; for a folder, a file added or removed).

How a frame is read:

* a file ``source.path`` without ``transform``: with pyarrow into pandas, no Spark, honouring
  the format and the reader options :mod:`mailgem.runner.source` gives Spark (its CSV defaults:
  header, inferred types, quoted line breaks, ``""`` as a quote; ``sep``; ``encoding``; JSON
  ``multiLine``, columns sorted as Spark sorts them; Parquet nanoseconds floored to
  microseconds). An option pyarrow cannot honour sends the source to Spark instead;
* a ``transform`` or a SQL source: Spark (one local session, started on the first such read and
  kept warm), its frame collected once to pandas when it has at most ``max_rows`` rows, its
  ``TIMESTAMP`` columns kept as instants in the session's zone (as the gem shows them from the
  Spark frame); a larger frame is persisted and kept as a Spark frame (slower previews).

A job with two named ``sources`` (the gem's ``in0`` and ``in1``) is read with Spark, each input
through its transform and kept as above, so previews carry ``in1`` as a run does.

Message keys of ``per_group``/``per_row`` messages keyed by a ``TIMESTAMP`` column read as the
pandas input's keys do (with the zone's offset), not as a run on the Spark frame writes them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from mailgem.connections.errors import MailgemError
from mailgem.gems.email.data import collect
from mailgem.runner.cli.steps import is_spark_error
from mailgem.runner.job import JobSpec, job_frame, job_frames
from mailgem.runner.source import CSV_DEFAULTS, SourceInfo, reader_option, source_files
from mailgem.runner.spark import (
    local_spark,
    new_log_file,
    quiet_python_loggers,
    spark_error_line,
)

__all__ = ["DEFAULT_MAX_ROWS", "FrameCache", "FrameReadError"]

log = logging.getLogger("mailgem.ui")

# A transformed frame up to this many rows is collected to pandas (about 100 MB for 20 columns);
# a larger one stays in Spark, persisted.
DEFAULT_MAX_ROWS = 200_000

# Reader options pyarrow honours as Spark does (keys lower case, as Spark matches them).
_ARROW_OPTIONS = {"csv": {"header", "inferschema", "multiline", "escape", "quote", "sep", "delimiter"},
                  "json": {"multiline"}, "parquet": set()}


class FrameReadError(MailgemError):
    """The job's source or transform could not be read; the message names the job file, the
    step (``source`` or ``transform``) and Spark's one useful line."""


@dataclass
class _Kept:
    key: tuple[Any, ...]  # each source and transform, folder, file stamps
    frame: Any  # a pandas DataFrame, or a persisted Spark DataFrame
    note: str
    in1: Any = None  # the second input, for a job with two sources


class FrameCache:
    """The job's input frame, read once per source and transform (see the module docstring).

    Args:
        max_rows: a Spark frame with at most this many rows is collected to pandas.
        spark: a running SparkSession to use (not stopped by :meth:`close`); default: one
            started here on the first read that needs Spark (on ``master``, its own output in
            a log file), stopped by :meth:`close`.
        master: the Spark master of that session (``mailgem ui --master``).

    Safe to call from several threads: reads are one at a time.
    """

    def __init__(self, max_rows: int = DEFAULT_MAX_ROWS, spark: Any = None, master: str = "local[2]") -> None:
        self.max_rows = max_rows
        self.master = master
        self._spark = spark
        self._owns_spark = spark is None
        self._log_file: Path | None = None
        self._kept: _Kept | None = None
        self._lock = threading.RLock()

    def frame(self, job: JobSpec) -> tuple[Any, str]:
        """The job's input frame and a note on how it was read (for the UI to show).

        Returns:
            ``(frame, note)``: a pandas DataFrame, or a persisted Spark DataFrame when the
            transformed frame has more than ``max_rows`` rows; the same object while the job's
            source, transform and folder stay the same.

        Raises:
            FrameReadError: the source is missing or unreadable, or Spark refused the source's
                or transform's SQL.
        """
        in0, _, note = self.frames(job)
        return in0, note

    def frames(self, job: JobSpec) -> tuple[Any, Any, str]:
        """``(in0, in1, note)``: as :meth:`frame`, and the second input of a job with two
        ``sources`` (``None`` for a job with one ``source``), read with Spark.

        Raises:
            FrameReadError: as :meth:`frame`.
        """
        key = (tuple((one.spec.model_dump_json(), one.transform) for one in job.inputs), str(job.base_dir),
               tuple(_stamp(job, one.spec) for one in job.inputs))
        with self._lock:
            if self._kept is not None and self._kept.key == key:
                return self._kept.frame, self._kept.in1, self._kept.note
            self.clear()
            if len(job.inputs) > 1:
                frame, in1, note = self._read_two(job)
            else:
                (frame, note), in1 = self._read(job), None
            self._kept = _Kept(key, frame, note, in1)
            return frame, in1, note

    def clear(self) -> None:
        """Forget the kept frame (the next :meth:`frame` reads again); Spark stays up."""
        with self._lock:
            kept, self._kept = self._kept, None
            for frame in (kept.frame, kept.in1) if kept is not None else ():
                if hasattr(frame, "unpersist"):
                    frame.unpersist()

    def close(self) -> None:
        """Forget the frame and stop the SparkSession this cache started (if any)."""
        with self._lock:
            self.clear()
            if self._spark is not None and self._owns_spark:
                self._spark.stop()
                self._spark = None

    # -- reading ---------------------------------------------------------------------------

    def _read(self, job: JobSpec) -> tuple[Any, str]:
        info = job.inspect_source()
        errors = [message for severity, message in info.problems if severity == "error"]
        if errors:
            raise FrameReadError("; ".join(errors))
        spec = job.inputs[0].spec
        if job.inputs[0].transform is None and info.path is not None and _arrow_readable(spec):
            table = _read_arrow(spec, info)
            return _pandas(table), f"{table.num_rows:,} rows read from {info.path.name} (pyarrow, no Spark)"
        return self._read_spark(job, info)

    def _session(self) -> Any:
        if self._spark is None:
            quiet_python_loggers(False)
            self._log_file = new_log_file()
            self._spark = local_spark(self.master, app_name="mailgem-ui", log_file=self._log_file)
        return self._spark

    def _read_spark(self, job: JobSpec, info: SourceInfo) -> tuple[Any, str]:
        where = str(job.file or "job")
        frame = job_frame(job, self._session(), info, step=lambda what, sql: self._spark_errors(where, what, sql))
        return self._kept_frame(where, frame, job.inputs[0])

    def _read_two(self, job: JobSpec) -> tuple[Any, Any, str]:
        """Both inputs of a job with two ``sources``, read with Spark (the second's transform
        may use the first's view)."""
        where = str(job.file or "job")
        infos = job.inspect_sources()
        errors = [message for info in infos for severity, message in info.problems if severity == "error"]
        if errors:
            raise FrameReadError("; ".join(errors))
        in0, in1 = job_frames(job, self._session(), list(infos),
                              step=lambda what, sql: self._spark_errors(where, what, sql))
        (in0, note0), (in1, note1) = (self._kept_frame(where, f, one) for f, one in zip((in0, in1), job.inputs))
        return in0, in1, f"{job.inputs[0].name}: {note0}; {job.inputs[1].name} (in1): {note1}"

    def _kept_frame(self, where: str, frame: Any, one: Any) -> tuple[Any, str]:
        """``frame`` collected to pandas when it has at most ``max_rows`` rows, else persisted."""
        with self._spark_errors(where, one.transform_field if one.transform else one.field, one.transform or one.spec.sql):
            # At most max_rows + 1 rows come to the driver: one pass tells small from large.
            data = collect(frame.limit(self.max_rows + 1), all_rows=True, head_rows=0)
            if data.row_count <= self.max_rows:
                return _pandas(data.table), f"{data.row_count:,} rows read with Spark, kept in memory"
            frame = frame.persist()
        return frame, (f"over {self.max_rows:,} rows: kept in Spark (persisted), so each preview runs a Spark job "
                       "and is slower; filter the transform for quicker previews")

    @contextlib.contextmanager
    def _spark_errors(self, where: str, step: str, sql: str | None) -> Iterator[None]:
        """A Spark error inside raised as one :class:`FrameReadError` line, naming the job file,
        the step and its SQL (as the CLI words it)."""
        try:
            yield
        except Exception as exc:
            if not is_spark_error(exc):
                raise
            sql_text = f" (SQL: {' '.join(sql.split())})" if sql else ""
            more = f" (Spark's own log: {self._log_file})" if self._log_file else ""
            raise FrameReadError(f"{where}: {step}: {spark_error_line(exc)}{sql_text}{more}") from None


def _stamp(job: JobSpec, spec: Any) -> tuple[int, int] | None:
    """When the source's file (or folder) last changed and its size: a new export of the data
    is read again at the next preview. ``None`` for a SQL source."""
    if spec.path is None:
        return None
    try:
        stat = (job.base_dir / Path(spec.path).expanduser()).stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _pandas(table: pa.Table) -> Any:
    """``table`` as pandas with Arrow-backed columns: integers with nulls stay integers and
    time-zone-aware instants keep their zone, so the gem sees the types Arrow had."""
    import pandas as pd

    return table.to_pandas(types_mapper=pd.ArrowDtype)


def _options(spec: Any) -> dict[str, str]:
    """The reader options Spark gets for ``spec``, keys lower case."""
    options = dict(CSV_DEFAULTS) if spec.file_format == "csv" else {}
    return {k.lower(): str(v) for k, v in (options | spec.options).items()}


def _arrow_readable(spec: Any) -> bool:
    """Whether pyarrow reads ``spec`` as Spark would: only options it honours, CSV with inferred
    types and ``"`` quotes escaped by doubling."""
    fmt = spec.file_format
    options = _options(spec)
    if not set(options) <= _ARROW_OPTIONS[fmt]:
        return False
    if fmt == "csv":
        quote = options.get("quote", '"')
        return (options.get("inferschema") == "true" and options.get("escape") == quote and len(quote) == 1
                and len(reader_option(spec, "sep", reader_option(spec, "delimiter", ","))) == 1)
    return True


def _read_arrow(spec: Any, info: SourceInfo) -> pa.Table:
    """The source's files read by pyarrow (see :func:`_arrow_readable`).

    Raises:
        FrameReadError: a file cannot be read or parsed.
    """
    assert info.path is not None
    fmt = spec.file_format
    files = source_files(info.path, fmt)
    try:
        if fmt == "parquet":
            table = _read_parquet(info.path, files, info)
        elif fmt == "csv":
            table = pa.concat_tables([_read_csv(f, spec) for f in files], promote_options="permissive")
        else:
            table = _read_json(files, spec)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise FrameReadError(f"source.path: cannot read {info.path}: {exc}") from None
    return table


def _read_parquet(path: Path, files: list[Path], info: SourceInfo) -> pa.Table:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    if path.is_dir():  # a Spark output folder: hive partition folders become columns, as in Spark
        table = ds.dataset(str(path), format="parquet", partitioning="hive",
                           ignore_prefixes=["_", "."]).to_table()
    else:
        table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
    for name in info.nanos_columns:  # Spark floors nanoseconds to microseconds (read_source)
        i = table.column_names.index(name)
        floored = pc.floor_temporal(table.column(i), unit="microsecond")
        table = table.set_column(i, name, floored.cast(pa.timestamp("us", tz=table.schema.field(i).type.tz)))
    return table


def _read_csv(path: Path, spec: Any) -> pa.Table:
    import pyarrow.csv as pcsv

    options = _options(spec)
    delimiter = options.get("sep", options.get("delimiter", ","))
    header = options.get("header") == "true"
    read = pcsv.ReadOptions(encoding=spec.encoding or "utf8", autogenerate_column_names=not header)
    parse = pcsv.ParseOptions(delimiter=delimiter, quote_char=options.get("quote", '"'), double_quote=True,
                              newlines_in_values=options.get("multiline") == "true")
    table = pcsv.read_csv(path, read_options=read, parse_options=parse)
    if not header:  # Spark names them _c0, _c1, ...
        table = table.rename_columns([f"_c{i}" for i in range(table.num_columns)])
    return table


def _read_json(files: list[Path], spec: Any) -> pa.Table:
    """JSON records as Spark reads them: one per line (or a document of them with ``multiLine``),
    columns the union of every record's keys, sorted; no timestamps inferred from text."""
    multi_line = _options(spec).get("multiline") == "true"
    records: list[dict[str, Any]] = []
    for path in files:
        text = path.read_text(encoding=spec.encoding or "utf-8")
        if multi_line:
            document = json.loads(text)
            records += document if isinstance(document, list) else [document]
        else:
            records += [json.loads(line) for line in text.splitlines() if line.strip()]
    if not all(isinstance(r, dict) for r in records):
        raise ValueError("a record is not a JSON object")
    names = sorted({key for record in records for key in record})
    return pa.Table.from_pylist([{n: r.get(n) for n in names} for r in records])
