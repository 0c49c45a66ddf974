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
    """A read-only store behind a service (a network API, a command). :meth:`get` asks it once
    per name and keeps the value (a :class:`SecretStr`) for the life of the instance; the fabric
    keeps the instance for the run (``keeps_values``), so a run reads each secret once.

    It pickles (a fabric may go with a gem to Spark workers) with the values it read and without
    its lock or its client (``_client``), which a copy makes again on first use."""

    keeps_values = True
    # Attributes a pickled copy leaves behind (made again on first use): the lock, a client.
    _transient: tuple[str, ...] = ("_lock", "_client")

    def __init__(self) -> None:
        self._values: dict[str, SecretStr] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, **{k: None for k in self._transient if k in self.__dict__}}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
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
