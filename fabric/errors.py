"""Errors raised by fabrics: configuration, access and secrets."""

from __future__ import annotations

from mailgem.connections.errors import ConfigError, MailgemError

__all__ = ["FabricConfigError", "AccessDeniedError", "SecretNotFoundError", "SecretStoreError"]


class FabricConfigError(ConfigError):
    """A fabric file is wrong; the message names the file and the YAML path."""


class AccessDeniedError(MailgemError, PermissionError):
    """The user is not a member of any team the fabric is assigned to."""


class SecretNotFoundError(MailgemError, KeyError):
    """A connection references a secret the fabric's store does not hold."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class SecretStoreError(MailgemError):
    """The secret store cannot be read or written (missing key, wrong key, corrupt file)."""
