"""Protected and linked attachments: ``protect`` (a password-protected ZIP) on an attachment, and
``files`` (existing files attached as they are) — part of the Email gem's properties
(:mod:`.properties` re-exports every name).

As YAML::

    attachments: [{format: xlsx, file_name: "payroll-{{ run_date }}.xlsx", protect: {password: {secret: payroll-zip}}}]
    files: [{path: "reports/{{ group.region }}.pdf", file_name: "{{ group.region }} report.pdf"}]
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mailgem.connections.secretref import SecretRef

__all__ = ["Protection", "FileSpec"]

_MODEL = ConfigDict(frozen=True, extra="forbid")


class Protection(BaseModel):
    """Send the attachment as ``<file_name>.zip``: a ZIP holding the file, AES-256 encrypted
    (WinZip AES, which 7-Zip, WinZip, WinRAR and The Unarchiver open) with the password stored
    in the fabric's secret store under ``password.secret``. The password is never in the message:
    tell recipients it another way."""

    model_config = _MODEL
    password: SecretRef = Field(description=(
        "The ZIP's password, as a secret of the fabric's store: {secret: NAME} (set it with `mailgem secrets set NAME`)."))


class FileSpec(BaseModel):
    """An existing file attached as it is (a PDF exported upstream). ``path`` may be a Jinja2
    template rendered per message (``reports/{{ group.region }}.pdf``); in a job file a relative
    path is relative to the job file's folder, in Python to ``EmailGem(..., base_dir=)`` (default:
the current directory). A file that
    does not exist fails: before the run for a fixed path, that message for a template."""

    model_config = _MODEL
    path: str = Field(min_length=1, description=(
        "The file to attach (a Jinja2 template allowed); relative paths start at the job file's folder. On Spark "
        "executors (distributed: true) the path must be readable there (a shared or mounted folder)."))
    file_name: str | None = Field(default=None, min_length=1, description=(
        "Jinja2 template for the attachment's name (default: the file's own name); its content type follows the name."))
    protect: Protection | None = Field(default=None, description=(
        "Send the file in an AES-256 encrypted ZIP whose password is a fabric secret: {password: {secret: NAME}}."))

    @field_validator("path")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value or "\r" in value or "\x00" in value:
            raise ValueError("a path must be one line without NUL characters")
        return value.strip()
