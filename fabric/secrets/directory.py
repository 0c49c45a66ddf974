"""Secrets as files in a directory, one file per secret (Kubernetes and Docker secrets style)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from pydantic import SecretStr

from ..errors import SecretNotFoundError, SecretStoreError
from .base import SecretStore

__all__ = ["DirectorySecretStore"]


class DirectorySecretStore(SecretStore):
    """Secret ``name`` is the UTF-8 content of ``directory/name``, surrounding whitespace removed.

    Writable (``mailgem secrets set``): a value is written to a new file of mode 0600 and renamed
    into place, so a reader never sees half a value; a read-only mount (Kubernetes, Docker
    secrets) refuses, and the error says so.
    """

    kind = "directory"
    writable = True

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"DirectorySecretStore(directory={str(self.directory)!r})"

    def _path(self, name: str) -> Path:
        path = (self.directory / self.check_name(name)).resolve()
        if self.directory.resolve() not in path.parents:
            raise SecretStoreError(f"secret name {name!r} points outside {self.directory}")
        return path

    def get(self, name: str) -> SecretStr:
        try:
            if not self.directory.is_dir():
                raise SecretStoreError(f"secret directory {self.directory} does not exist")
            path = self._path(name)
            if not path.is_file():
                raise SecretNotFoundError(f"secret {name!r} not found: create the file {path}")
            return SecretStr(path.read_text(encoding="utf-8").strip())
        except OSError as exc:  # a path the system refuses (too long, no permission): said in words
            raise SecretStoreError(f"secret directory {self.directory}: cannot read secret {name!r}: "
                                   f"{exc.strerror or exc}") from None

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(str(p.relative_to(self.directory)) for p in self.directory.rglob("*")
                      if p.is_file() and not p.name.startswith("."))

    def set(self, name: str, value: SecretStr) -> None:
        """Write ``value`` to ``directory/name`` (mode 0600; the directory, 0700, made if missing).

        Raises:
            SecretStoreError: an empty or blank value, a name outside the directory, or a
                directory the system will not write to (the message says why; never the value).
        """
        self.check_value(name, value)
        path = self._path(name)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".mailgem-")  # mode 0600
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(value.get_secret_value() + "\n")
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise SecretStoreError(f"secret directory {self.directory}: cannot write secret {name!r}: "
                                   f"{exc.strerror or exc} (a mounted secrets volume is read-only: set it where "
                                   "the volume is managed)") from None

    def delete(self, name: str) -> None:
        """Remove ``directory/name``.

        Raises:
            SecretNotFoundError: no such file. SecretStoreError: the system refuses.
        """
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise SecretNotFoundError(f"secret {name!r} not found in {self.directory}") from None
        except OSError as exc:
            raise SecretStoreError(f"secret directory {self.directory}: cannot delete secret {name!r}: "
                                   f"{exc.strerror or exc}") from None
