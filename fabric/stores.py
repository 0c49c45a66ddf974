"""The fabric's secret store, as a fabric file configures it (``secrets:``): one model per
``type``, each building its :class:`~mailgem.fabric.secrets.SecretStore`. Stores that need a
library import it when built, so a fabric names only the extras it uses."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mailgem.connections.errors import MailgemError

from .secrets import DirectorySecretStore, EncryptedFileSecretStore, EnvSecretStore, SecretStore
from .secrets.aws import AwsSecretsManagerStore
from .secrets.command import NAME_PLACEHOLDER, CommandSecretStore
from .secrets.vault import VaultAuth, VaultTokenAuth

__all__ = ["StoreConfig", "EnvStoreConfig", "DirectoryStoreConfig", "EncryptedFileStoreConfig", "CommandStoreConfig",
           "AwsSecretsManagerStoreConfig", "VaultStoreConfig", "GcpSecretManagerStoreConfig", "DatabricksStoreConfig",
           "AirflowStoreConfig"]

_FROZEN = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class EnvStoreConfig(BaseModel):
    """Secrets from environment variables ``<prefix><NAME>``."""

    model_config = _FROZEN
    type: Literal["env"] = "env"
    prefix: str = "MAILGEM_SECRET_"

    def build(self, fabric_path: Path | None = None) -> SecretStore:
        return EnvSecretStore(self.prefix)


class DirectoryStoreConfig(BaseModel):
    """Secrets as files in a directory (Kubernetes/Docker secrets)."""

    model_config = _FROZEN
    type: Literal["directory"]
    path: Path

    def build(self, fabric_path: Path | None = None) -> SecretStore:
        return DirectorySecretStore(self.path)


class EncryptedFileStoreConfig(BaseModel):
    """Secrets in an AES-256-GCM encrypted file. The key is ``key_file`` when given, otherwise
    the environment variable ``key_env`` (default ``MAILGEM_SECRETS_KEY``); naming both is an
    error, so there is one place the key can come from."""

    model_config = _FROZEN
    type: Literal["encrypted_file"]
    path: Path
    key_env: str | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _one_key_source(self) -> EncryptedFileStoreConfig:
        if self.key_env is not None and self.key_file is not None:
            raise ValueError("give key_env (an environment variable holding the key) or key_file, not both: "
                             "the key comes from one place")
        return self

    def build(self, fabric_path: Path | None = None) -> SecretStore:
        return EncryptedFileSecretStore(self.path, self.key_env, self.key_file, fabric_path=fabric_path)


# A command-line argument: the system cannot pass a NUL character in one.
_Arg = Annotated[str, Field(pattern=r"^[^\x00]*$")]


class CommandStoreConfig(BaseModel):
    """Secrets printed by a command, run without a shell; ``{name}`` in ``argv`` is the secret's
    name (or the command reads it from the environment variable ``name_env``). For example::

        argv: [vault, kv, get, -field=password, "secret/{name}"]
        argv: [aws, secretsmanager, get-secret-value, --secret-id, "{name}", --query, SecretString, --output, text]
        argv: [gcloud, secrets, versions, access, latest, "--secret={name}"]
        argv: [op, read, "op://vault/{name}/password"]
        argv: [pass, show, "{name}"]

    ``list_argv`` prints one name per line (``mailgem secrets list``); ``timeout_s`` bounds each run.
    """

    model_config = _FROZEN
    type: Literal["command"]
    argv: list[_Arg] = Field(min_length=1, description="The command and its arguments; {name} is the secret's name.")
    name_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                 description="An environment variable the command gets the secret's name in.")
    list_argv: list[_Arg] | None = Field(default=None, min_length=1,
                                         description="A command printing the secret names, one per line.")
    timeout_s: float = Field(default=10.0, gt=0, le=600)

    @model_validator(mode="after")
    def _name_reaches_the_command(self) -> CommandStoreConfig:
        # Without the name the command would print the same value for every secret.
        if self.name_env is None and not any(NAME_PLACEHOLDER in item for item in self.argv):
            raise ValueError("the command must get the secret's name: put {name} in an argv item, or set name_env")
        if not self.argv[0] or (self.list_argv is not None and not self.list_argv[0]):
            raise ValueError("a command's first item is the program to run: it cannot be empty")
        return self

    def build(self, fabric_path: Path | None = None) -> SecretStore:
        return CommandSecretStore(self.argv, name_env=self.name_env, list_argv=self.list_argv, timeout_s=self.timeout_s)


class AwsSecretsManagerStoreConfig(BaseModel):
    """Secrets in AWS Secrets Manager (extra ``aws``): ``NAME`` or ``NAME#JSON_KEY``, read as
    ``prefix + NAME`` in ``region``; credentials from boto3's usual chain, never this file."""

    model_config = _FROZEN
    type: Literal["aws_secrets_manager"]
    region: str = Field(min_length=1)
    prefix: str = ""
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/\S*)?$",
                                     description="A VPC endpoint or a test server (an http(s) URL).")

    def build(self, fabric_path: Path | None = None) -> SecretStore:
        """The store.

        Raises:
            MailgemError: boto3 is not installed.
        """
        try:
            import boto3  # noqa: F401  (the store imports it on first use; said here, at the start)
        except ImportError:
            raise MailgemError("the aws_secrets_manager secret store needs boto3: pip install 'mailgem[aws]'") from None
        return AwsSecretsManagerStore(self.region, self.prefix, self.endpoint_url)


class VaultStoreConfig(BaseModel):
    """Secrets in HashiCorp Vault's KV v2 engine (extra ``vault``): secret ``NAME`` is field
    ``field`` of ``<mount>/data/<path>/NAME`` (``NAME#other`` names another field). Vault's token
    comes from ``auth`` (token from ``VAULT_TOKEN`` or a file, AppRole, Kubernetes), never inline."""

    model_config = _FROZEN
    type: Literal["vault"]
    address: str = Field(min_length=1)
    mount: str = Field("secret", min_length=1)
    path: str = ""
    field: str = Field("password", min_length=1)
    auth: VaultAuth = Field(default_factory=VaultTokenAuth)
    namespace: str | None = None
    ca_bundle: Path | None = None
    timeout_s: float = Field(10.0, gt=0, le=300)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_token(cls, data: object) -> object:
        auth = data.get("auth") if isinstance(data, dict) else None
        if isinstance(data, dict) and ("token" in data or isinstance(auth, dict) and "token" in auth):
            raise ValueError("a Vault token is never written in the fabric file: set VAULT_TOKEN "
                             "(or auth.token_env) or name a file with auth.token_file")
        return data

    def build(self, fabric_path: Path | None = None) -> SecretStore:
        """Raises: SecretStoreError when hvac is not installed (``pip install 'mailgem[vault]'``)."""
        from .secrets.remote import require
        from .secrets.vault import VaultSecretStore

        require("hvac", "vault", "vault")
        return VaultSecretStore(self.address, mount=self.mount, path=self.path, field=self.field, auth=self.auth,
                                namespace=self.namespace, ca_bundle=self.ca_bundle, timeout_s=self.timeout_s)


class GcpSecretManagerStoreConfig(BaseModel):
    """Secrets in Google Cloud Secret Manager (extra ``gcp``), version ``version`` of each.
    ``endpoint`` replaces the API's address; ``anonymous`` sends no credentials (local endpoints)."""

    model_config = _FROZEN
    type: Literal["gcp_secret_manager"]
    project: str = Field(min_length=1)
    version: str = Field("latest", min_length=1)
    endpoint: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/\S*)?$",
                                 description="Another address of the API (an http(s) URL; a test server).")
    anonymous: bool = False
    timeout_s: float = Field(10.0, gt=0, le=300)

    def build(self, fabric_path: Path | None = None) -> SecretStore:
        """Raises: SecretStoreError when the client library is missing (``pip install 'mailgem[gcp]'``)."""
        from .secrets.gcp_secret_manager import GcpSecretManagerStore
        from .secrets.remote import require

        require("google.cloud.secretmanager", "gcp", "gcp_secret_manager")
        return GcpSecretManagerStore(self.project, self.version, endpoint=self.endpoint, anonymous=self.anonymous,
                                     timeout_s=self.timeout_s)


class DatabricksStoreConfig(BaseModel):
    """Secrets in a Databricks secret scope (extra ``databricks``): ``dbutils`` on Databricks,
    else databricks-sdk with its usual configuration (``profile`` of ``~/.databrickscfg`` if named)."""

    model_config = _FROZEN
    type: Literal["databricks"]
    scope: str = Field(min_length=1)
    profile: str | None = None

    def build(self, fabric_path: Path | None = None) -> SecretStore:
        """Raises: SecretStoreError off Databricks when databricks-sdk is missing
        (``pip install 'mailgem[databricks]'``)."""
        from .secrets.databricks import DatabricksSecretStore, find_dbutils
        from .secrets.remote import require

        dbutils = find_dbutils()
        if dbutils is None:
            require("databricks.sdk", "databricks", "databricks")
        return DatabricksSecretStore(self.scope, profile=self.profile, dbutils=dbutils)


class AirflowStoreConfig(BaseModel):
    """Airflow's Variables (``NAME``, ``NAME#JSON_KEY``) or Connections (``CONN_ID``: its password;
    ``CONN_ID#FIELD``: ``login``, ``host``, ``schema``, ``port``, ``conn_type``, ``uri`` or a key of
    its extra) named ``prefix + NAME``, through Airflow's own secrets backend (extra ``airflow``):
    a team that keeps passwords in Airflow keeps them there. Works inside an Airflow task (its
    Variables and Connections are reachable from the task's process only)."""

    model_config = _FROZEN
    type: Literal["airflow"]
    source: Literal["variable", "connection"] = Field(
        "variable", description="Read Airflow Variables, or the passwords (and fields) of Airflow Connections.")
    prefix: str = Field("", description="Put before each secret's name (e.g. smtp_).")

    def build(self, fabric_path: Path | None = None) -> SecretStore:
        """Raises: SecretStoreError when Airflow is not installed (``pip install 'mailgem[airflow]'``)."""
        from .secrets.airflow import AirflowSecretStore
        from .secrets.remote import require

        require("airflow", "airflow", "airflow")
        return AirflowSecretStore(self.source, self.prefix)


StoreConfig = Annotated[EnvStoreConfig | DirectoryStoreConfig | EncryptedFileStoreConfig | CommandStoreConfig
                        | AwsSecretsManagerStoreConfig | VaultStoreConfig | GcpSecretManagerStoreConfig
                        | DatabricksStoreConfig | AirflowStoreConfig, Field(discriminator="type")]
