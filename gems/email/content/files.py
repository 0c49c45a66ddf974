"""Linked attachments (``files: [{path, file_name, protect}]``): existing files attached as they are.

A path may be a template (``reports/{{ group.region }}.pdf``), rendered per message. A file that
does not exist, or is too large for the message, fails that message with a clear error; it is
never sent without the file. A file's size is known from ``stat`` before it is read, and each
distinct file (path, modification time and size) is read once per composer, not once per message.
"""

from __future__ import annotations

import math
import mimetypes
import os
import stat
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailgem.connections.errors import MessageTooLargeError

from ..properties import EmailProperties, FileSpec
from ..validate import Diagnostic
from .attachments import Attachment
from .checks import MessageBuildError
from .file_names import file_name_or_default
from .protect import Protector
from .render import render
from .templates import is_template

__all__ = ["FileAttachment", "LinkedFiles", "resolve_path", "missing_files", "MAX_CACHED_BYTES"]

# Files kept in memory between messages, in bytes: a run attaching many large files reads the
# oldest again rather than holding them all.
MAX_CACHED_BYTES = 256 * 1024 * 1024
# What a message takes besides its attachments, at least (headers, MIME boundaries): checks.estimated_size's.
_OVERHEAD_BYTES = 4096


@dataclass(frozen=True)
class FileAttachment(Attachment):
    """An attachment read from a file (``files``): attached whole, never split or compressed."""


def resolve_path(path: str, base: Path | None = None) -> Path:
    """``path`` (``~`` expanded) as an absolute path, a relative one taken from ``base`` (default:
    the current directory); ``..`` is kept as written (no symlink is followed)."""
    found = Path(path).expanduser()
    return Path(os.path.abspath(found if found.is_absolute() else (base or Path.cwd()) / found))


def missing_files(props: EmailProperties, base_dir: Path | None,
                  base_name: str = "the current directory") -> list[Diagnostic]:
    """An error for each ``files`` entry whose fixed (not templated) path is not a file: checked
    before a run, so a missing export stops it before anything is read or sent. ``base_name``
    says what ``base_dir`` is in the message (``the job file's folder``)."""
    out = []
    for i, spec in enumerate(props.files):
        if is_template(spec.path):
            continue  # rendered per message: a missing one fails that message
        path = resolve_path(spec.path, base_dir)
        if not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            start = "" if Path(spec.path).expanduser().is_absolute() else \
                f" (a relative path starts at {base_name}, {base_dir or Path.cwd()})"
            out.append(Diagnostic(f"files[{i}].path", "error", f"{spec.path} resolves to {path}, which {what}{start}: "
                                                              "export the file first, or correct the path"))
    return out


def _sent_size(size: int) -> int:
    """Bytes a file of ``size`` bytes takes in a message: base64, CRLF every 76 characters."""
    return math.ceil(size / 3) * 4 * 78 // 76


def _fixed_folder(template: str, base: Path | None) -> Path | None:
    """The folder a templated path's fixed start names (``reports/{{ r }}.pdf`` →
    ``<base>/reports``), which a rendered path must stay inside; ``None`` when the template
    starts with a template tag (the template then names the whole path)."""
    head = template[: min(i for i in (template.find("{{"), template.find("{%")) if i >= 0)]
    folder, slash, _ = head.rpartition("/")
    return resolve_path(folder or "/", base) if slash else None


class LinkedFiles:
    """The ``files`` of a run, read for each message.

    Args:
        specs: the properties' ``files``.
        base_dir: where relative paths start (a job's folder; ``None``: the current directory).
        size_limit: the largest message, bytes as transmitted (``None``: no limit).
        policy: ``attachments_over_limit``, named in the error of a file over the limit.
        protector: encrypts the entries with ``protect``.
    """

    def __init__(self, specs: Sequence[FileSpec], base_dir: Path | None, size_limit: int | None, policy: str,
                 protector: Protector) -> None:
        self.specs = list(specs)
        self.base_dir = base_dir
        self.size_limit = size_limit
        self.policy = policy
        self.protector = protector
        self._cache: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._cached_bytes = 0

    def __bool__(self) -> bool:
        return bool(self.specs)

    def attachments(self, ctx: dict[str, Any]) -> list[Attachment]:
        """The message's file attachments, in order.

        Raises:
            MessageBuildError: a file does not exist or is not a regular file (names the entry,
                the path as rendered and as resolved).
            MessageTooLargeError: a file alone is over the message's size limit.
            TemplateError: a path or file name template fails.
        """
        return [self._one(i, spec, ctx) for i, spec in enumerate(self.specs)]

    def _one(self, i: int, spec: FileSpec, ctx: dict[str, Any]) -> Attachment:
        where = f"files[{i}]"
        templated = is_template(spec.path)
        raw = render(f"{where}.path", spec.path, ctx).strip() if templated else spec.path
        path = resolve_path(raw, self.base_dir)
        folder = _fixed_folder(spec.path, self.base_dir) if templated else None
        if folder is not None and not path.is_relative_to(folder):
            raise MessageBuildError(f"{where}.path: {raw} resolves to {path}, outside {folder}, where the path's "
                                    "template starts: a value from the data may not leave that folder")
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise MessageBuildError(f"{where}.path: {raw} resolves to {path}, which does not exist") from None
        except OSError as exc:
            raise MessageBuildError(f"{where}.path: {raw} resolves to {path}, which cannot be read: "
                                    f"{exc.strerror or type(exc).__name__}") from None
        if not stat.S_ISREG(info.st_mode):
            raise MessageBuildError(f"{where}.path: {raw} resolves to {path}, which is not a file")
        self._check_size(where, path, info.st_size)
        data = self._read(path, info)
        name = render(f"{where}.file_name", spec.file_name, ctx) if spec.file_name else path.name
        name, _ = file_name_or_default(name)
        mime = mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
        maintype, _, subtype = mime.partition("/")
        attachment: Attachment = FileAttachment(name, data, maintype, subtype)
        if spec.protect is not None:
            zipped = self.protector(attachment, spec.protect, where)
            attachment = FileAttachment(zipped.file_name, zipped.data, zipped.maintype, zipped.subtype,
                                        notes=zipped.notes)
        return attachment

    def _check_size(self, where: str, path: Path, size: int) -> None:
        """Refuse a file that alone makes the message too large, from its size, before reading it."""
        if self.size_limit is None or _sent_size(size) + _OVERHEAD_BYTES <= self.size_limit:
            return
        cannot = ("" if self.policy == "error" else
                  f"; attachments_over_limit: {self.policy} does not apply to it: a file is attached whole, it cannot "
                  "be split or compressed")
        raise MessageTooLargeError(
            f"{where}: the file {path} is {size:,} bytes ({_sent_size(size):,} as sent in base64), over the message "
            f"limit of {self.size_limit:,} bytes{cannot}; attach a smaller file, or raise max_message_bytes if the "
            "server takes more", size_bytes=_sent_size(size), limit_bytes=self.size_limit)

    def _read(self, path: Path, info: os.stat_result) -> bytes:
        key = (str(path), info.st_mtime_ns, info.st_size)
        data = self._cache.get(key)
        if data is not None:
            self._cache.move_to_end(key)
            return data
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise MessageBuildError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
        if len(data) <= MAX_CACHED_BYTES:
            self._cache[key] = data
            self._cached_bytes += len(data)
            while self._cached_bytes > MAX_CACHED_BYTES:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= len(old)
        return data
