"""Secrets from environment variables: ``smtp-password`` is read from ``MAILGEM_SECRET_SMTP_PASSWORD``."""

from __future__ import annotations

import os
import re

from pydantic import SecretStr

from ..errors import SecretNotFoundError
from .base import SecretStore

__all__ = ["EnvSecretStore"]


class EnvSecretStore(SecretStore):
    """Secrets in environment variables named ``prefix`` + the secret name, upper-cased, with
    every character other than letters and digits replaced by ``_``."""

    kind = "env"

    def __init__(self, prefix: str = "MAILGEM_SECRET_") -> None:
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"EnvSecretStore(prefix={self.prefix!r})"

    def variable(self, name: str) -> str:
        """The environment variable that holds secret ``name``."""
        return self.prefix + re.sub(r"[^A-Za-z0-9]", "_", self.check_name(name)).upper()

    def get(self, name: str) -> SecretStr:
        var = self.variable(name)
        value = os.environ.get(var)
        if value is None:
            raise SecretNotFoundError(f"secret {name!r} not found: set the environment variable {var}")
        return SecretStr(value)

    def names(self) -> list[str]:
        return sorted(k[len(self.prefix):].lower() for k in os.environ if k.startswith(self.prefix))
