"""What the stores behind a network API share: each secret read once per store instance, the
client library imported only when the store is used, and errors without values."""

from __future__ import annotations

import importlib
import os
import threading
from abc import abstractmethod
from pathlib import Path
from types import ModuleType

from pydantic import SecretStr

from ..errors import SecretStoreError
from .base import SecretStore

__all__ = ["RemoteSecretStore", "require", "credential"]


def require(module: str, extra: str, kind: str) -> ModuleType:
    """Import ``module``, the client library of the ``kind`` store.

    Raises:
        SecretStoreError: the library is not installed (the message says which extra installs it).
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SecretStoreError(f"the {kind} secret store needs the {module} library: "
                               f"pip install 'mailgem[{extra}]'") from None


def credential(kind: str, what: str, env: str | None, file: Path | None) -> str:
    """A login credential (never a secret the fabric serves) from ``file`` when given, else from
    the environment variable ``env``; surrounding whitespace removed.

    Raises:
        SecretStoreError: the file cannot be read or is empty, or the variable is unset or empty
            (the message names the file or variable, never its content).
    """
    if file is not None:
        try:
            value = Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretStoreError(f"{kind} secret store: cannot read the {what} file {file}: "
                                   f"{exc.strerror or type(exc).__name__}") from None
        if not value:
            raise SecretStoreError(f"{kind} secret store: the {what} file {file} is empty")
        return value
    value = os.environ.get(env or "", "").strip()
    if not value:
        raise SecretStoreError(f"{kind} secret store: no {what}: set the environment variable {env} "
                               f"(or name a file holding it in the fabric)")
    return value


class RemoteSecretStore(SecretStore):
    """A read-only store behind a network API. :meth:`get` asks the service once per name and
    keeps the value (a :class:`SecretStr`) for the life of the instance, i.e. the run."""

    def __init__(self) -> None:
        self._values: dict[str, SecretStr] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> SecretStr:
        """The secret ``name``, read from the service the first time only.

        Raises:
            SecretNotFoundError: the service has no such secret (or version, or field).
            SecretStoreError: the service refused or could not be reached; the message names the
                store, the secret and what to check.
        """
        with self._lock:
            if name not in self._values:
                self._values[name] = self._read(name)
            return self._values[name]

    @abstractmethod
    def _read(self, name: str) -> SecretStr:
        """Ask the service for ``name`` (errors as :meth:`get`)."""
