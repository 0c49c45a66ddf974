"""A job's source: where it is, what it holds (read cheaply, before Spark), and reading it in Spark.

Before Spark starts, :func:`inspect_source` finds the file (relative paths are relative to the
job file), reads what is cheap to read — a Parquet footer's schema (pyarrow), a CSV header
line, the keys of a JSON source small enough to read whole (a record may leave out its null
fields, so a sample would not do) — and checks what Spark would silently get wrong:

* text that is not valid in the declared ``encoding`` (Spark would turn it into U+FFFD
  replacement characters) or that already holds U+FFFD: a warning naming the column and the
  ``source.encoding`` option (the first 256 MB are checked);
* Parquet columns Spark cannot read: nanosecond timestamps (what pandas writes by default) are
  read anyway (as microseconds, see :func:`read_source`); decimals over 38 digits are an error
  naming the column and the fix.

CSV is read as the user meant it: a header line, inferred types, quoted fields spanning lines
(``multiLine``) and ``""`` inside quotes as a quote (``escape``), RFC 4180 style.
"""

from __future__ import annotations

import codecs
import csv
import glob
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mailgem.fabric.errors import FabricConfigError

__all__ = ["SourceSpec", "SourceInfo", "inspect_source", "read_source", "source_files", "reader_option", "CSV_DEFAULTS",
           "SPARK_MAX_DECIMAL_DIGITS"]

log = logging.getLogger("mailgem.job")

# RFC 4180 CSV as spreadsheets write it: quoted fields may hold line breaks, "" is a quote.
CSV_DEFAULTS = {"header": "true", "inferSchema": "true", "multiLine": "true", "escape": '"'}
SPARK_MAX_DECIMAL_DIGITS = 38
SPARK_CHARSETS = frozenset({"iso-8859-1", "us-ascii", "utf-16", "utf-16be", "utf-16le", "utf-32", "utf-8"})
_SCAN_CHUNK_BYTES = 8 * 1024 * 1024
# The encoding check reads at most this much of a source (0.15 s measured, cached), so it stays fast on big files.
SCAN_LIMIT_BYTES = 256 * 1024 * 1024
# A JSON source's columns are known before Spark only when it is read whole (see _json_columns):
# up to this size (0.37 s of parsing here; 32 MB took 0.74 s).
JSON_SCAN_LIMIT_BYTES = 16 * 1024 * 1024
_FORMATS = ("csv", "parquet", "json")


class SourceSpec(BaseModel):
    """Where the data comes from: a file ``path`` (csv, parquet, json; a folder or a glob of them)
    or a Spark SQL ``sql`` query. A relative ``path`` is relative to the job file."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    path: str | None = None
    format: Literal["csv", "parquet", "json"] | None = None
    encoding: str | None = Field(default=None, description="Text encoding of a csv/json source (default utf-8), e.g. cp1252.")
    options: dict[str, str] = Field(default_factory=dict, description=(
        "Spark reader options, over mailgem's defaults (CSV: header, inferSchema, multiLine, escape '\"')."))
    sql: str | None = None

    @field_validator("path")
    @classmethod
    def _not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is empty: name a csv, parquet or json file, a folder or a glob of them, relative to the "
                             "job file")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> SourceSpec:
        if (self.path is None) == (self.sql is None):
            raise ValueError("give exactly one of source.path (a csv/parquet/json file) or source.sql (a Spark SQL query)")
        if self.path is not None and self.format is None and self.suffix_format is None:
            raise ValueError(f"cannot tell the format of {self.path!r} from its suffix: set source.format to csv, parquet or json")
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except (LookupError, ValueError):  # ValueError: a NUL in the name
                raise ValueError(f"unknown encoding {self.encoding!r}: use a name like utf-8, cp1252 or latin1") from None
        return self

    @property
    def suffix_format(self) -> str | None:
        suffix = Path(self.path or "").suffix.lower().lstrip(".")
        return suffix if suffix in _FORMATS else None

    @property
    def file_format(self) -> str:
        return self.format or self.suffix_format or "parquet"


@dataclass
class SourceInfo:
    """What :func:`inspect_source` found.

    Attributes:
        path: the resolved path (``None`` for a SQL source).
        columns: ``{column: type name or None}`` when the schema was cheap to read, else ``None``.
        nanos_columns: Parquet timestamp columns stored in nanoseconds (read as microseconds).
        problems: ``(severity, message)`` pairs; severity ``error`` or ``warning``.
    """

    path: Path | None
    columns: dict[str, str | None] | None = None
    nanos_columns: dict[str, bool] = field(default_factory=dict)  # column: time-zone aware
    problems: list[tuple[str, str]] = field(default_factory=list)


def source_files(path: Path, fmt: str) -> list[Path]:
    """The data files a path names: itself, a folder's files (Spark's part files), or a glob."""
    if glob.has_magic(str(path)):
        return sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(("_", "."))
                      and (p.suffix.lower().lstrip(".") == fmt or fmt != "parquet" or not p.suffix))
    return [path] if path.is_file() else []


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; ``False`` for a name the system refuses (too long)."""
    try:
        return path.exists()
    except OSError:
        return False


def inspect_source(spec: SourceSpec, base_dir: Path, job_file: str) -> SourceInfo:
    """Find and inspect a job's source before Spark starts (see the module docstring).

    Args:
        spec: the job's ``source``.
        base_dir: the job file's folder (relative paths start there).
        job_file: the job file's name, for messages.

    Returns:
        the source's resolved path, its columns when cheap to read, and the problems found.
    """
    if spec.path is None:
        return SourceInfo(None)
    fmt = spec.file_format
    try:
        path = Path(spec.path).expanduser()
        path = path if path.is_absolute() else (base_dir / path)
        files = source_files(path, fmt)
    except (RuntimeError, OSError) as exc:  # RuntimeError: ~user with no home; OSError: e.g. a name too long
        reason = ("it starts with ~, and there is no such user's home folder here: write the path in full"
                  if isinstance(exc, RuntimeError) else f"{exc.strerror or exc}")
        info = SourceInfo(None)
        info.problems.append(("error", f"{job_file}: source.path: {spec.path!r} cannot be used: {reason}"))
        return info
    info = SourceInfo(path)
    if not files:
        hint = ""
        if not Path(spec.path).is_absolute() and _exists(Path(spec.path)):
            hint = (f"; {spec.path} exists relative to the current directory, but a job's paths are relative to the "
                    f"job file: write it as {Path(spec.path).resolve()} or relative to {base_dir}")
        info.problems.append(("error", f"{job_file}: source.path: {spec.path!r} resolves to {path}, which does not "
                                       f"exist{hint}"))
        return info
    try:
        if fmt == "parquet":
            _inspect_parquet(files, info, job_file)
        elif fmt in ("csv", "json"):
            _check_text(files, spec, info, job_file)
            if fmt == "csv":
                info.columns = _csv_header(files[0], spec)
            else:
                info.columns = _json_columns(files, spec)
    except (OSError, ValueError, UnicodeError, csv.Error) as exc:
        info.problems.append(("error", f"{job_file}: source.path: cannot read {files[0]}: {exc}"))
    return info


def _json_type(value: Any) -> str | None:
    """The Spark type name JSON's reader infers for a value (``None`` for null)."""
    for kind, name in ((bool, "boolean"), (int, "bigint"), (float, "double"), (str, "string"), (list, "array"),
                       (dict, "struct")):
        if isinstance(value, kind):
            return name
    return None


def _json_columns(files: list[Path], spec: SourceSpec) -> dict[str, str | None] | None:
    """A JSON source's columns as Spark reads them: every record's keys (Spark sorts them), with
    the type of each one's first non-null value. ``None`` (not known before Spark) when the files
    are over :data:`JSON_SCAN_LIMIT_BYTES` together, or a record is not a JSON object: Spark's
    columns are the union over *every* record (writers leave out null fields), so a sample
    could miss one and report a column that exists as unknown."""
    if sum(path.stat().st_size for path in files) > JSON_SCAN_LIMIT_BYTES:
        return None
    multi_line = reader_option(spec, "multiline", "false").lower() == "true"
    columns: dict[str, str | None] = {}
    try:
        for path in files:
            text = path.read_text(encoding=spec.encoding or "utf-8")
            if multi_line:
                document = json.loads(text)
                records = document if isinstance(document, list) else [document]
            else:
                records = [json.loads(line) for line in text.splitlines() if line.strip()]
            for record in records:
                if not isinstance(record, dict):
                    return None
                for key, value in record.items():
                    if columns.get(key) is None:
                        columns[key] = _json_type(value)
    except (ValueError, UnicodeError):  # Spark decides what a malformed record becomes (_corrupt_record)
        return None
    return dict(sorted(columns.items()))


def _inspect_parquet(files: list[Path], info: SourceInfo, job_file: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(files[0])
    info.columns = {f.name: str(f.type) for f in schema}
    for f in schema:
        if pa.types.is_timestamp(f.type) and f.type.unit == "ns":
            info.nanos_columns[f.name] = f.type.tz is not None
        elif pa.types.is_decimal(f.type) and f.type.precision > SPARK_MAX_DECIMAL_DIGITS:
            info.problems.append(("error", (
                f"{job_file}: source.path: column {f.name!r} of {files[0].name} is {f.type}, more digits than Spark's "
                f"{SPARK_MAX_DECIMAL_DIGITS}: write it as decimal({SPARK_MAX_DECIMAL_DIGITS}, {min(f.type.scale, 38)}), "
                "a double or a string where the file is made (e.g. pyarrow: table.cast(...))")))


def reader_option(spec: SourceSpec, name: str, default: str) -> str:
    """Reader option ``name`` (lower case) of ``spec``, its key matched case-insensitively as
    Spark matches them, or ``default``."""
    return str(next((v for k, v in spec.options.items() if k.lower() == name), default))


def _csv_dialect(spec: SourceSpec) -> tuple[str, bool]:
    delimiter = reader_option(spec, "sep", reader_option(spec, "delimiter", ","))
    return delimiter, reader_option(spec, "header", "true").lower() == "true"


def _csv_header(path: Path, spec: SourceSpec, sample_rows: int = 200) -> dict[str, str | None] | None:
    """Column names of a CSV file and a guess of their types from the first rows (as Spark's
    ``inferSchema`` would: all integers → ``bigint``, all numbers → ``double``), for sample values."""
    delimiter, header = _csv_dialect(spec)
    if len(delimiter) != 1:
        return None  # Spark takes a longer separator (and says what is wrong with an empty one); Python's csv does not
    with path.open(encoding=spec.encoding or "utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        first = next(reader, None)
        if first is None:
            return {}
        rows = [first] if not header else []
        rows += [row for _, row in zip(range(sample_rows), reader, strict=False)]
    names = first if header else [f"_c{i}" for i in range(len(first))]
    return {name: _guess_type([r[i] for r in rows if i < len(r) and r[i] != ""]) for i, name in enumerate(names)}


def _guess_type(values: list[str]) -> str | None:
    for kind, parse in (("bigint", int), ("double", float)):
        try:
            for v in values:
                parse(v)
        except ValueError:
            continue
        return kind if values else None
    return None


def _check_text(files: list[Path], spec: SourceSpec, info: SourceInfo, job_file: str) -> None:
    """Warn about text Spark would decode to U+FFFD (or that already holds it), naming the column."""
    encoding = codecs.lookup(spec.encoding or "utf-8").name
    if encoding not in ("utf-8", "utf-8-sig"):
        return  # single-byte encodings decode every byte; nothing to find
    budget = SCAN_LIMIT_BYTES
    for path in files:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        offset = 0
        with path.open("rb") as f:
            while budget > 0 and (chunk := f.read(min(_SCAN_CHUNK_BYTES, budget))):
                budget -= len(chunk)
                try:
                    text = decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    where = _column_at(path, offset + max(0, exc.start - len(decoder.getstate()[0])), spec)
                    info.problems.append(("warning", (
                        f"{job_file}: source: {path.name} is not valid UTF-8 (byte {chunk[exc.start]:#04x}{where}); Spark "
                        "would read it as U+FFFD replacement characters. Set source.encoding to the file's encoding "
                        "(e.g. cp1252 or latin1)")))
                    return
                if "\ufffd" in text:
                    position = offset + len(text[:text.index("\ufffd")].encode())
                    info.problems.append(("warning", (
                        f"{job_file}: source: {path.name} already holds U+FFFD replacement characters"
                        f"{_column_at(path, position, spec)}: text was decoded with the wrong encoding before it was "
                        "written; fix it where the file is made")))
                    return
                offset += len(chunk)


def _column_at(path: Path, offset: int, spec: SourceSpec) -> str:
    """`` in column 'x', line n`` for a byte offset of a CSV file (best effort), else ``at byte n``."""
    with path.open("rb") as f:
        head = f.read(offset + 4096)
    line_start = head.rfind(b"\n", 0, offset) + 1
    line_no = head.count(b"\n", 0, offset) + 1
    if spec.file_format != "csv":
        return f", line {line_no}"
    end = head.find(b"\n", offset)
    line = head[line_start:end if end >= 0 else len(head)].decode("utf-8", errors="replace")
    delimiter, header = _csv_dialect(spec)
    if len(delimiter) != 1:
        return f", line {line_no}"  # Python's csv cannot split it (see _csv_header)
    fields = next(csv.reader(io.StringIO(line), delimiter=delimiter), [])
    names = list(_csv_header(path, spec) or {}) if header else []
    for i, value in enumerate(fields):
        if "\ufffd" in value:
            name = names[i] if i < len(names) else f"_c{i}"
            return f", line {line_no}, column {name!r}"
    return f", line {line_no}"


def read_source(spark: Any, spec: SourceSpec, info: SourceInfo | None = None) -> Any:
    """The source as a Spark DataFrame.

    Parquet nanosecond timestamps are read as microseconds (Spark has no nanoseconds; the last
    three digits are dropped) with their time-zone awareness kept.

    Raises:
        FabricConfigError: the file does not exist.
    """
    if spec.sql is not None:
        return spark.sql(spec.sql)
    path = info.path if info is not None and info.path is not None else Path(spec.path or "")
    if not glob.has_magic(str(path)) and not path.exists():
        raise FabricConfigError(f"source.path {str(path)!r} does not exist")
    fmt = spec.file_format
    options = dict(CSV_DEFAULTS) if fmt == "csv" else {}
    if spec.encoding and fmt in ("csv", "json"):
        options["encoding"] = spec.encoding
        if spec.encoding.lower().replace("_", "-") not in SPARK_CHARSETS:
            # Spark 4 accepts only a few charsets unless told to use Java's (cp1252 & co.).
            spark.conf.set("spark.sql.legacy.javaCharsets", "true")
    options |= spec.options
    nanos = info.nanos_columns if info is not None and fmt == "parquet" else {}
    if nanos:
        spark.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
    frame = spark.read.options(**options).format(fmt).load(str(path))
    if nanos:
        from pyspark.sql import functions as F

        for name, aware in nanos.items():
            # Floor to whole microseconds in integers (a double would lose digits past 2**53).
            quoted = "`" + name.replace("`", "``") + "`"
            micros = F.timestamp_micros(F.expr(f"({quoted} - pmod({quoted}, 1000)) div 1000"))
            frame = frame.withColumn(name, micros if aware else micros.cast("timestamp_ntz"))
        log.info("source %s: nanosecond timestamps read as microseconds: %s", path.name, ", ".join(nanos))
    return frame
