"""The secret store protocol: ``get(name) -> SecretStr``, names only otherwise."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

from pydantic import SecretStr

from ..errors import SecretStoreError

__all__ = ["SecretStore", "SECRET_NAME"]

# Names become env var suffixes and file names: keep them portable.
SECRET_NAME = re.compile(r"^[A-Za-z0-9_.\-/]+$")


class SecretStore(ABC):
    """Where a fabric keeps its secrets. Values exist only as :class:`pydantic.SecretStr`.

    Subclasses implement :meth:`get` and :meth:`names`; writable stores also :meth:`set`.
    ``repr`` shows the configuration, never a value.
    """

    kind = "abstract"

    @abstractmethod
    def get(self, name: str) -> SecretStr:
        """Return the secret called ``name``.

        Raises:
            SecretNotFoundError: the store has no such secret (the message says how to add it).
        """

    @abstractmethod
    def names(self) -> list[str]:
        """The names of the secrets in the store, sorted (never the values)."""

    def set(self, name: str, value: SecretStr) -> None:
        """Store ``value`` under ``name``. Read-only stores raise :class:`SecretStoreError`."""
        raise SecretStoreError(
            f"the {self.kind} secret store is read-only for mailgem; set the secret where that store "
            "is managed, or use an encrypted_file store"
        )

    def delete(self, name: str) -> None:
        """Remove the secret ``name``. Read-only stores raise :class:`SecretStoreError`.

        Raises:
            SecretNotFoundError: there is no such secret.
        """
        raise SecretStoreError(
            f"the {self.kind} secret store is read-only for mailgem; remove {name!r} where that store is managed"
        )

    @staticmethod
    def check_name(name: str) -> str:
        if not SECRET_NAME.match(name):
            raise SecretStoreError(f"invalid secret name {name!r}: use letters, digits and _ . - /")
        return name
