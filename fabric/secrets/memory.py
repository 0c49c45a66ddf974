"""An in-memory secret store, for the embedded local fabric and for building fabrics in Python."""

from __future__ import annotations

from pydantic import SecretStr

from ..errors import SecretNotFoundError
from .base import SecretStore

__all__ = ["MemorySecretStore"]


class MemorySecretStore(SecretStore):
    """Secrets held in this process only; lost when it exits."""

    kind = "memory"
    writable = True

    def __init__(self, values: dict[str, SecretStr] | None = None) -> None:
        self._values = dict(values or {})

    def __repr__(self) -> str:
        return f"MemorySecretStore(names={sorted(self._values)})"

    def get(self, name: str) -> SecretStr:
        try:
            return self._values[name]
        except KeyError:
            raise SecretNotFoundError(f"secret {name!r} not found in the in-memory store") from None

    def set(self, name: str, value: SecretStr) -> None:
        """Store ``value`` under ``name``.

        Raises:
            SecretStoreError: an invalid name, or a value that is empty or only whitespace.
        """
        self._values[self.check_name(name)] = self.check_value(name, value)

    def delete(self, name: str) -> None:
        if self._values.pop(name, None) is None:
            raise SecretNotFoundError(f"secret {name!r} not found in the in-memory store")

    def names(self) -> list[str]:
        return sorted(self._values)
