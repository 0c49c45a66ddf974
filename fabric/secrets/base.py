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
    # A store that fetches from a service keeps each value it read, so a run asks once per secret;
    # the fabric then keeps the store object for the run (Fabric.store).
    keeps_values = False
    # Whether mailgem may write to it (``mailgem secrets set``, the UI's secret form); the others
    # are managed where they live (Vault, AWS, ...), and their :meth:`set` says so.
    writable = False

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
        """Store ``value`` under ``name`` (writable stores check it with :meth:`check_value`
        first). Read-only stores raise :class:`SecretStoreError`."""
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

    @staticmethod
    def check_value(name: str, value: SecretStr, how: str | None = None) -> SecretStr:
        """``value`` when it holds something other than whitespace. Kept exactly as given
        otherwise (spaces inside or around a password may belong to it).

        An empty or blank value is always a mistake (an empty pipe, an unset variable expanded
        in a shell, Enter pressed at the prompt), and stored it would only fail later, at the
        server's login, as a wrong password.

        Args:
            how: the command that sets it, for the message (default ``mailgem secrets set NAME``).

        Raises:
            SecretStoreError: the value is empty or only whitespace (the message never shows it).
        """
        if not value.get_secret_value().strip():
            how = how or f"`mailgem secrets set {name}`"
            raise SecretStoreError(
                f"the value given for secret {name!r} is empty or only whitespace, so nothing was stored: pipe the "
                f"value on stdin of {how}, or type it at its prompt")
        return value
