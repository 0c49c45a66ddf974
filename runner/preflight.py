"""Every check that can run before Spark starts, in the order a run needs them.

job file → fabric → connection (and its fallbacks) → the user's access → secrets resolvable (the
connection's, the ledger's, protected attachments' passwords) → attached files exist → source exists (relative to the job file) and what it holds → the Email gem's properties and
templates, rendered against a sample context built from the source's columns when they are
cheap to read. ``mailgem run``, ``validate``, ``preview`` and ``run --dry-run`` all start here,
so a mistake is found in seconds, reported once, with the file, the field and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailgem.connections.errors import MailgemError
from mailgem.connections.transport import SmtpTransport
from mailgem.fabric.errors import AccessDeniedError, FabricConfigError
from mailgem.fabric.loader import LOCAL_CONNECTION, load_fabric
from mailgem.fabric.model import Fabric, current_user

from mailgem.gems.email.content.files import missing_files
from mailgem.gems.email.content.protect import protect_refs
from mailgem.gems.email.run.ledger_open import check_ledger, ledger_target
from mailgem.gems.email.validate import invalid_params, validate
from .job import JobSpec, load_job, with_params
from .source import SourceInfo

__all__ = ["Finding", "Preflight", "check_job", "default_fabric", "FABRIC_ENV"]

FABRIC_ENV = "MAILGEM_FABRIC"


@dataclass(frozen=True)
class Finding:
    """One problem: ``severity`` (``error``/``warning``) and a message that starts with the file
    and the field."""

    severity: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}"


@dataclass
class Preflight:
    """What :func:`check_job` found.

    Attributes:
        job: the parsed job (``None`` when the file itself is wrong).
        fabric: the fabric (``None`` for the embedded local fabric, or when it failed to load).
        local: the run goes to the embedded local server.
        source: the source's resolved path and cheap schema (with two ``sources``, the first's).
        in1_source: the second source's, for a job with two ``sources`` (else ``None``).
        transports: the connection's transports with secrets resolved (only when asked for).
        findings: every problem, in check order.
    """

    job_file: Path
    job: JobSpec | None = None
    fabric: Fabric | None = None
    local: bool = False
    source: SourceInfo | None = None
    in1_source: SourceInfo | None = None
    transports: list[SmtpTransport] | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        """True when the run would start."""
        return not self.errors


def check_job(job_file: str | Path, *, fabric_file: Path | None, local: bool = False, user: str | None = None,
              read_secrets: bool = True, job: JobSpec | None = None,
              params: Mapping[str, Any] | None = None) -> Preflight:
    """Run every check that needs no Spark and no SMTP server; see the module docstring.

    Args:
        job_file: the job YAML.
        fabric_file: the fabric YAML (``--fabric`` / ``$MAILGEM_FABRIC``), if any.
        local: send through the embedded local server whatever connection the job names.
        user: who runs the job (default: :func:`mailgem.fabric.model.current_user`).
        read_secrets: resolve the connection's secrets (``preview`` reads none).
        job: the job already parsed from ``job_file``'s text as it is being edited (``mailgem
            ui``); ``None`` loads the file.
        params: values that replace the job's ``params`` of the same names (``--param``, a
            scheduler's run date); checked with the templates like the file's own.

    Returns:
        the findings; never raises for a user's mistake.
    """
    pre = Preflight(Path(job_file))
    name = str(job_file)
    try:
        pre.job = job = job if job is not None else load_job(job_file)
    except MailgemError as exc:
        pre.findings.append(Finding("error", str(exc)))
        return pre
    pre.job = job = with_params(job, params or {})
    pre.local = local or job.email.connection == LOCAL_CONNECTION
    if not pre.local:
        _check_fabric(pre, fabric_file, user or current_user(), read_secrets)
    if job.email.ledger is not None and read_secrets and not pre.errors:
        _check_ledger(pre, user or current_user())
    if read_secrets and not pre.errors:
        _check_passwords(pre, user or current_user())
    for d in missing_files(job.email, job.base_dir, "the job file's folder"):
        pre.findings.append(Finding(d.severity, f"{name}: email.{d.path}: {d.message}"))
    infos = job.inspect_sources()
    pre.source, pre.in1_source = infos[0], (infos[1] if len(infos) > 1 else None)
    # A source's columns are known before Spark when it is a file read as it is (no transform).
    columns = [info.columns if not one.transform and one.spec.path is not None else None
               for one, info in zip(job.inputs, infos, strict=True)]
    for info in infos:
        pre.findings += [Finding(severity, message) for severity, message in info.problems]
    for d in validate(job.email, columns[0], job=job.name, params=job.params, special_domains=special_domains(pre),
                      in1_columns=columns[1] if len(columns) > 1 else None, has_in1=len(infos) > 1):
        pre.findings.append(Finding(d.severity, f"{name}: email.{d.path}: {d.message}"))
    pre.findings += [Finding(d.severity, f"{name}: {d.path}: {d.message}") for d in invalid_params(job.params)]
    return pre


def _check_fabric(pre: Preflight, fabric_file: Path | None, user: str, read_secrets: bool) -> None:
    assert pre.job is not None
    connection = pre.job.email.connection
    if fabric_file is None:
        pre.findings.append(Finding("error", (
            f"{pre.job_file}: email.connection is {connection!r}, which lives in a fabric, and no fabric was given: "
            f"pass --fabric FABRIC.yaml or set {FABRIC_ENV}; to try the job on the embedded local SMTP server "
            "instead, pass --local")))
        return
    try:
        pre.fabric = fabric = load_fabric(fabric_file)
    except MailgemError as exc:
        pre.findings.append(Finding("error", str(exc)))
        return
    try:
        if read_secrets:
            pre.transports = fabric.transports(connection, user)
        else:
            fabric.check_access(user)
            fabric.destination(connection)  # the connection exists
    except AccessDeniedError as exc:
        pre.findings.append(Finding("error", f"{fabric_file}: access denied: {exc}"))
    except FabricConfigError as exc:
        pre.findings.append(Finding("error", f"{pre.job_file}: email.connection: {exc}"))
    except MailgemError as exc:  # a secret that cannot be resolved
        pre.findings.append(Finding("error", f"{fabric_file}: {exc}"))


def _check_ledger(pre: Preflight, user: str) -> None:
    """The ledger opens (its secret, its database, its tables): a wrong URL or password is
    reported before Spark starts, not after the data is read."""
    assert pre.job is not None
    options = pre.job.email.ledger
    assert options is not None
    if options.secret is not None and pre.fabric is None:
        pre.findings.append(Finding("error", (
            f"{pre.job_file}: email.ledger.secret: the embedded local server's fabric holds no secrets, so the "
            f"PostgreSQL ledger's password ({options.secret!r}) is not available with --local: try the job with "
            "ledger.path (a SQLite file) instead, or run it through its fabric (--fabric)")))
        return
    try:
        target = ledger_target(options, pre.fabric, user)
        assert target is not None
        check_ledger(target)
    except MailgemError as exc:
        pre.findings.append(Finding("error", f"{pre.job_file}: email.ledger: {exc}"))


def _check_passwords(pre: Preflight, user: str) -> None:
    """Protected attachments' passwords are in the fabric's store, for this user: a missing one
    is reported before Spark starts, naming the field and the store (never a value)."""
    assert pre.job is not None
    said: set[str] = set()
    for path, secret in protect_refs(pre.job.email):
        if secret in said:
            continue  # each secret once, at the first field that names it
        said.add(secret)
        if pre.fabric is None:
            pre.findings.append(Finding("error", (
                f"{pre.job_file}: email.{path}: the embedded local server's fabric holds no secrets, so the ZIP "
                f"password {secret!r} is not available with --local: try the job without protect (or with --dry-run, "
                "which encrypts with a throwaway password), or run it through its fabric (--fabric)")))
            continue
        try:
            pre.fabric.secret(secret, user)
        except MailgemError as exc:
            pre.findings.append(Finding("error", f"{pre.job_file}: email.{path}: fabric {pre.fabric.name!r} "
                                                 f"({pre.fabric.secrets.type} secret store): {exc}"))


def special_domains(pre: Preflight) -> tuple[str, ...]:
    """The job's connection's ``allowed_special_domains`` (none without its fabric)."""
    if pre.fabric is None or pre.job is None:
        return ()
    return pre.fabric.special_domains(pre.job.email.connection)


def default_fabric() -> Path | None:
    """``$MAILGEM_FABRIC`` as a path, if set."""
    value = os.environ.get(FABRIC_ENV)
    return Path(value) if value else None
