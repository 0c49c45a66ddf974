"""Secrets from HashiCorp Vault's KV version 2 engine, through hvac (extra ``vault``).

Secret ``smtp`` is field ``password`` (the store's ``field``) of the KV entry
``<mount>/data/<path>/smtp``; ``smtp#api_key`` names another field. Vault's own token comes from
the environment or a file (token, AppRole or Kubernetes login), never from the fabric file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ..errors import SecretNotFoundError, SecretStoreError
from .remote import RemoteSecretStore, credential, require

__all__ = ["VaultSecretStore", "VaultTokenAuth", "VaultAppRoleAuth", "VaultKubernetesAuth", "VaultAuth"]

_FROZEN = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class VaultTokenAuth(BaseModel):
    """A Vault token from ``token_file`` when given, else from the variable ``token_env``."""

    model_config = _FROZEN
    method: Literal["token"] = "token"
    token_env: str = "VAULT_TOKEN"
    token_file: Path | None = None

    def login(self, client: Any, hvac: Any) -> None:
        client.token = credential("vault", "token", self.token_env, self.token_file)


class VaultAppRoleAuth(BaseModel):
    """AppRole login: role_id and secret_id each from a file or an environment variable."""

    model_config = _FROZEN
    method: Literal["approle"]
    role_id_env: str = "VAULT_ROLE_ID"
    role_id_file: Path | None = None
    secret_id_env: str = "VAULT_SECRET_ID"
    secret_id_file: Path | None = None
    mount: str = "approle"

    def login(self, client: Any, hvac: Any) -> None:
        role_id = credential("vault", "AppRole role_id", self.role_id_env, self.role_id_file)
        secret_id = credential("vault", "AppRole secret_id", self.secret_id_env, self.secret_id_file)
        client.auth.approle.login(role_id=role_id, secret_id=secret_id, mount_point=self.mount)


class VaultKubernetesAuth(BaseModel):
    """Kubernetes login: ``role`` and the pod's service-account token (a JWT) from ``jwt_file``."""

    model_config = _FROZEN
    method: Literal["kubernetes"]
    role: str = Field(min_length=1)
    jwt_file: Path = SERVICE_ACCOUNT_TOKEN
    mount: str = "kubernetes"

    def login(self, client: Any, hvac: Any) -> None:
        jwt = credential("vault", "service-account token", None, self.jwt_file)
        client.auth.kubernetes.login(role=self.role, jwt=jwt, mount_point=self.mount)


VaultAuth = Annotated[VaultTokenAuth | VaultAppRoleAuth | VaultKubernetesAuth, Field(discriminator="method")]


class VaultSecretStore(RemoteSecretStore):
    """Read-only secrets in Vault's KV v2 engine at ``address``; each read once per instance."""

    kind = "vault"

    def __init__(self, address: str, *, mount: str = "secret", path: str = "", field: str = "password",
                 auth: VaultTokenAuth | VaultAppRoleAuth | VaultKubernetesAuth | None = None,
                 namespace: str | None = None, ca_bundle: Path | None = None, timeout_s: float = 10.0) -> None:
        super().__init__()
        self.address, self.mount, self.path, self.field = address, mount.strip("/"), path.strip("/"), field
        self.auth = auth or VaultTokenAuth()
        self.namespace, self.ca_bundle, self.timeout_s = namespace, ca_bundle, timeout_s
        self._client: Any = None

    def __repr__(self) -> str:
        return (f"VaultSecretStore(address={self.address!r}, mount={self.mount!r}, path={self.path!r}, "
                f"field={self.field!r}, auth={self.auth.method!r})")

    def _where(self, key: str) -> str:
        return f"{self.path}/{key}" if self.path else key

    def _connect(self) -> tuple[Any, Any]:
        """hvac and a logged-in client (logged in once per instance)."""
        hvac = require("hvac", "vault", self.kind)
        if self._client is None:
            verify: bool | str = str(self.ca_bundle) if self.ca_bundle else True
            client = hvac.Client(url=self.address, token=None, verify=verify, timeout=self.timeout_s,
                                 namespace=self.namespace)
            try:
                self.auth.login(client, hvac)
            except SecretStoreError:
                raise
            except hvac.exceptions.VaultError as exc:
                raise SecretStoreError(
                    f"vault secret store at {self.address}: {self.auth.method} login refused "
                    f"({type(exc).__name__}): check the role and its credentials, that they have not "
                    "expired, and the auth mount") from None
            except Exception as exc:  # requests' connection errors and the like: said in words
                raise SecretStoreError(f"vault secret store: cannot reach {self.address} to log in "
                                       f"({type(exc).__name__}): check the address and the network") from None
            self._client = client
        return hvac, self._client

    def _refused(self, hvac: Any, exc: Exception, what: str) -> SecretStoreError | SecretNotFoundError:
        at = f"vault secret store at {self.address}"
        if isinstance(exc, hvac.exceptions.InvalidPath):
            return SecretNotFoundError(f"{at}: {what} not found (or its latest version is deleted): "
                                       f"check the mount {self.mount!r} and path {self.path!r}")
        if isinstance(exc, hvac.exceptions.Forbidden):
            return SecretStoreError(f"{at}: permission denied for {what}: check that the token's policy "
                                    "allows it and that the token has not expired")
        if isinstance(exc, hvac.exceptions.Unauthorized):
            return SecretStoreError(f"{at}: the token was refused for {what}: it is invalid or expired")
        if isinstance(exc, hvac.exceptions.VaultError):
            return SecretStoreError(f"{at}: {what}: Vault answered {type(exc).__name__}")
        return SecretStoreError(f"{at}: cannot reach Vault for {what} ({type(exc).__name__}): "
                                "check the address and the network")

    def _read(self, name: str) -> SecretStr:
        key, _, field = name.partition("#")
        field = field or self.field
        where = self._where(self.check_name(key))
        hvac, client = self._connect()
        what = f"secret {name!r} ({self.mount}/data/{where})"
        try:
            answer = client.secrets.kv.v2.read_secret_version(path=where, mount_point=self.mount,
                                                              raise_on_deleted_version=True)
        except Exception as exc:
            raise self._refused(hvac, exc, what) from None
        data = (answer.get("data") or {}).get("data") or {}
        if field not in data:
            raise SecretNotFoundError(f"vault secret store at {self.address}: {what} has no field {field!r} "
                                      f"(its fields: {', '.join(sorted(data)) or 'none'})")
        value = data[field]
        if not isinstance(value, str):
            raise SecretStoreError(f"vault secret store at {self.address}: field {field!r} of {what} "
                                   "is not a string")
        return SecretStr(value)

    def names(self) -> list[str]:
        """The KV entries under ``path`` (sub-folders included), sorted, as ``get`` names them.

        Raises:
            SecretStoreError: listing is refused (policies grant ``list`` on ``metadata/``) or fails.
        """
        hvac, client = self._connect()
        found: list[str] = []
        folders = [""]
        while folders and len(found) < 10_000:
            folder = folders.pop()
            try:
                answer = client.secrets.kv.v2.list_secrets(path=self._where(folder).rstrip("/"),
                                                           mount_point=self.mount)
            except Exception as exc:
                if isinstance(exc, hvac.exceptions.InvalidPath):
                    continue
                raise self._refused(hvac, exc, f"the list of {self.mount}/metadata/{self.path}") from None
            for key in (answer.get("data") or {}).get("keys") or []:
                (folders if key.endswith("/") else found).append(folder + key)
        return sorted(found)
