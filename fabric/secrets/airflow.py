"""Secrets kept in Airflow (extra ``airflow``): its Variables or its Connections, read through
Airflow's own secrets backend (``AIRFLOW_VAR_*``/``AIRFLOW_CONN_*`` environment variables, the
metadata database, or whatever backend the deployment configured: Vault, AWS, GCP...). A team
that keeps its SMTP password in Airflow keeps it there.

- ``source: variable``: secret ``NAME`` is the Variable ``prefix + NAME``; ``NAME#KEY`` is the key
  ``KEY`` of that Variable read as a JSON object.
- ``source: connection``: secret ``CONN_ID`` is that Connection's password; ``CONN_ID#FIELD``
  another of its fields (``login``, ``host``, ``schema``...) or a key of its extra.

Airflow 3 gives a task its Variables and Connections through the task's own supervisor, so the
store reads them in the process that runs the task (the operator, :mod:`mailgem.airflow`, runs
mailgem in that process); on Airflow 2.10 it reads them as any task does. Airflow's secrets masker
learns a Connection's password and extra, and the store gives it every Variable value it reads
(whatever the Variable's name), so Airflow's task log hides them too.
"""

from __future__ import annotations

import importlib
import json
from typing import Any, Literal

from pydantic import SecretStr

from ..errors import SecretNotFoundError, SecretStoreError
from .remote import RemoteSecretStore, require

__all__ = ["AirflowSecretStore", "AirflowSource"]

AirflowSource = Literal["variable", "connection"]

# Connection fields a secret may name after '#'; anything else is looked up in the extra.
_CONNECTION_FIELDS = ("password", "login", "host", "schema", "port", "conn_type", "uri")


def _sdk() -> Any:
    """``airflow.sdk`` (Airflow 3), else ``None`` (Airflow 2.10).

    Raises:
        SecretStoreError: Airflow is not installed (``pip install 'mailgem[airflow]'``).
    """
    require("airflow", "airflow", "airflow")
    try:
        return importlib.import_module("airflow.sdk")
    except ImportError:
        return None


def _mask(sdk: Any, value: str) -> None:
    """Teach Airflow's secrets masker a Variable's ``value``, so the task's log hides it: Airflow
    masks a Variable by itself only when its name looks secret (``password``, ``token``...), but
    what this store reads is a secret whatever its name. (A Connection's password and extra
    Airflow masks itself; its other fields, a host or a port, would hide every mention of them.)"""
    module = "airflow.sdk.log" if sdk is not None else "airflow.utils.log.secrets_masker"  # Airflow 3, else 2.10
    importlib.import_module(module).mask_secret(value)


class AirflowSecretStore(RemoteSecretStore):
    """Read-only secrets from Airflow Variables or Connections (see the module docstring); each
    read once per store instance, i.e. once per run."""

    kind = "airflow"

    def __init__(self, source: AirflowSource = "variable", prefix: str = "") -> None:
        super().__init__()
        self.source, self.prefix = source, prefix

    def __repr__(self) -> str:
        return f"AirflowSecretStore(source={self.source!r}, prefix={self.prefix!r})"

    def _read(self, name: str) -> SecretStr:
        key, _, field = name.partition("#")
        if not key:
            raise SecretStoreError(f"airflow secret store: invalid secret name {name!r}: write NAME or NAME#FIELD")
        sdk = _sdk()
        if self.source == "variable":
            value = self._variable(sdk, self.prefix + key, field, name)
        else:
            value = self._connection(sdk, self.prefix + key, field or "password", name)
        if value is None or not str(value).strip():
            what = "Variable" if self.source == "variable" else "Connection"
            raise SecretNotFoundError(f"airflow secret store: secret {name!r}: the {what} {self.prefix + key!r} "
                                      f"has no value{f' for {field!r}' if field else ''}: set it in Airflow")
        if self.source == "variable":
            _mask(sdk, str(value))
        return SecretStr(str(value))

    def _variable(self, sdk: Any, variable: str, field: str, name: str) -> Any:
        try:
            if sdk is not None:
                text = sdk.Variable.get(variable)
            else:  # Airflow 2.10
                text = importlib.import_module("airflow.models").Variable.get(variable)
        except Exception as exc:  # noqa: BLE001 - Airflow's kinds differ by version; sorted below
            raise self._refused(exc, name, f"Variable {variable!r}",
                                f"`airflow variables set {variable} ...`, or AIRFLOW_VAR_{variable.upper()}") from None
        if not field:
            return text
        try:
            document = json.loads(text)
        except (TypeError, ValueError):
            raise SecretStoreError(f"airflow secret store: secret {name!r}: the Variable {variable!r} is not a JSON "
                                   f"object, so it has no key {field!r}") from None
        if not isinstance(document, dict) or field not in document:
            raise SecretNotFoundError(f"airflow secret store: secret {name!r}: the Variable {variable!r} has no "
                                      f"key {field!r}")
        return document[field]

    def _connection(self, sdk: Any, conn_id: str, field: str, name: str) -> Any:
        try:
            if sdk is not None:
                conn = sdk.Connection.get(conn_id)
            else:  # Airflow 2.10
                conn = importlib.import_module("airflow.hooks.base").BaseHook.get_connection(conn_id)
        except Exception as exc:  # noqa: BLE001 - as above
            raise self._refused(exc, name, f"Connection {conn_id!r}",
                                f"`airflow connections add {conn_id} ...`, or AIRFLOW_CONN_{conn_id.upper()}") from None
        if field == "uri":
            return conn.get_uri()
        if field in _CONNECTION_FIELDS:
            return getattr(conn, field)
        extra = conn.extra_dejson or {}
        if field not in extra:
            raise SecretNotFoundError(f"airflow secret store: secret {name!r}: the Connection {conn_id!r} has no "
                                      f"field {field!r} (fields: {', '.join(_CONNECTION_FIELDS)}; or a key of its "
                                      "extra)")
        return extra[field]

    @staticmethod
    def _refused(exc: Exception, name: str, what: str, how: str) -> SecretStoreError | SecretNotFoundError:
        # Airflow's own words are matched, never repeated: a backend's message may quote a URL.
        text = f"{type(exc).__name__} {getattr(exc, 'error', '')} {exc}"
        if isinstance(exc, KeyError) or "NotFound" in type(exc).__name__ or "NOT_FOUND" in text \
                or "isn't defined" in text or "does not exist" in text:
            return SecretNotFoundError(f"airflow secret store: secret {name!r}: Airflow has no {what}: add it "
                                       f"({how})")
        return SecretStoreError(f"airflow secret store: secret {name!r}: Airflow could not read the {what} "
                                f"({type(exc).__name__}): check the Airflow secrets backend's configuration and "
                                "that this runs inside an Airflow task or with Airflow's configuration")

    def names(self) -> list[str]:
        """Airflow's secrets backends look names up one at a time and cannot list them.

        Raises:
            SecretStoreError: always (the message says where to see the names).
        """
        where = "airflow variables list" if self.source == "variable" else "airflow connections list"
        raise SecretStoreError(f"the airflow secret store cannot list its secrets (Airflow's secrets backends look "
                               f"names up one at a time): `{where}` shows those in Airflow's database")
