"""Secrets from a Databricks secret scope (extra ``databricks``).

On Databricks (``dbutils`` in the notebook's namespace, or ``DATABRICKS_RUNTIME_VERSION`` set)
through ``dbutils.secrets.get(scope, key)``; elsewhere through databricks-sdk's
``WorkspaceClient`` (host and token from its usual configuration: ``DATABRICKS_HOST`` and
``DATABRICKS_TOKEN``, or a profile of ``~/.databrickscfg``).
"""

from __future__ import annotations

import base64
import binascii
import importlib
import os
import sys
from typing import Any

from pydantic import SecretStr

from ..errors import SecretNotFoundError, SecretStoreError
from .remote import RemoteSecretStore, require

__all__ = ["DatabricksSecretStore", "find_dbutils"]


def find_dbutils() -> Any:
    """The ``dbutils`` of the running notebook or job, or ``None`` off Databricks."""
    main = sys.modules.get("__main__")
    found = getattr(main, "dbutils", None)
    if found is None and "IPython" in sys.modules:
        shell = sys.modules["IPython"].get_ipython()
        found = getattr(shell, "user_ns", {}).get("dbutils") if shell is not None else None
    if found is None and os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        try:
            found = getattr(importlib.import_module("databricks.sdk.runtime"), "dbutils", None)
        except ImportError:
            found = None
    return found


class DatabricksSecretStore(RemoteSecretStore):
    """Read-only secrets of one Databricks secret ``scope``; each read once per instance.

    ``dbutils`` is used when given or found (:func:`find_dbutils`); otherwise the SDK, with
    ``profile`` of ``~/.databrickscfg`` when named.
    """

    kind = "databricks"
    _transient = (*RemoteSecretStore._transient, "_dbutils")  # a worker finds its own dbutils

    def __init__(self, scope: str, *, profile: str | None = None, dbutils: Any = None) -> None:
        super().__init__()
        self.scope, self.profile = scope, profile
        self._dbutils = dbutils
        self._client: Any = None

    def __repr__(self) -> str:
        return f"DatabricksSecretStore(scope={self.scope!r}, profile={self.profile!r})"

    def _utils(self) -> Any:
        if self._dbutils is None:
            self._dbutils = find_dbutils() or False
        return self._dbutils or None

    def _connect(self) -> Any:
        sdk = require("databricks.sdk", "databricks", self.kind)
        if self._client is None:
            try:
                self._client = sdk.WorkspaceClient(profile=self.profile)
            except Exception as exc:  # no host, no credentials, an unknown profile
                raise SecretStoreError(
                    f"databricks secret store (scope {self.scope!r}): the Databricks SDK found no usable "
                    f"configuration ({type(exc).__name__}): set DATABRICKS_HOST and DATABRICKS_TOKEN, or "
                    "name a profile of ~/.databrickscfg") from None
        return self._client

    def _refused(self, exc: Exception, what: str) -> SecretStoreError | SecretNotFoundError:
        at = f"databricks secret store (scope {self.scope!r})"
        errors = sys.modules.get("databricks.sdk.errors")
        text = f"{type(exc).__name__} {exc}"  # dbutils' words, matched here, never repeated
        if errors is not None and isinstance(exc, errors.NotFound) or "does not exist" in text:
            return SecretNotFoundError(f"{at}: {what} not found: check the scope and key "
                                       f"(`databricks secrets list-secrets {self.scope}`)")
        if errors is not None and isinstance(exc, errors.PermissionDenied) or "PERMISSION" in text.upper():
            return SecretStoreError(f"{at}: permission denied for {what}: the caller needs READ on the scope")
        if errors is not None and isinstance(exc, errors.Unauthenticated):
            return SecretStoreError(f"{at}: the token was refused for {what}: it is invalid or expired")
        return SecretStoreError(f"{at}: cannot read {what} ({type(exc).__name__}): check the host, "
                                "the network and the token")

    def _read(self, name: str) -> SecretStr:
        what = f"secret {name!r}"
        utils = self._utils()
        if utils is not None:
            try:
                return SecretStr(utils.secrets.get(scope=self.scope, key=name))
            except Exception as exc:
                raise self._refused(exc, what) from None
        client = self._connect()
        try:
            answer = client.secrets.get_secret(scope=self.scope, key=name)
        except Exception as exc:
            raise self._refused(exc, what) from None
        try:
            return SecretStr(base64.b64decode(answer.value or "", validate=True).decode("utf-8"))
        except (binascii.Error, UnicodeDecodeError):
            raise SecretStoreError(f"databricks secret store (scope {self.scope!r}): {what} is not "
                                   "base64-encoded UTF-8 text") from None

    def names(self) -> list[str]:
        """The scope's keys, sorted.

        Raises:
            SecretStoreError: listing is refused or fails.
        """
        utils = self._utils()
        try:
            if utils is not None:
                return sorted(m.key for m in utils.secrets.list(self.scope))
            return sorted(m.key for m in self._connect().secrets.list_secrets(scope=self.scope) if m.key)
        except SecretStoreError:
            raise
        except Exception as exc:
            raise self._refused(exc, "the list of keys") from None
