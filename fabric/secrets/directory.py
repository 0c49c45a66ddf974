"""Secrets as files in a directory, one file per secret (Kubernetes and Docker secrets style)."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from ..errors import SecretNotFoundError, SecretStoreError
from .base import SecretStore

__all__ = ["DirectorySecretStore"]


class DirectorySecretStore(SecretStore):
    """Secret ``name`` is the UTF-8 content of ``directory/name``, surrounding whitespace removed."""

    kind = "directory"

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
