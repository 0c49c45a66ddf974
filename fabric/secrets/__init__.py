"""Secret stores behind one protocol: environment variables, a directory of files, an encrypted
file, a command's output, and (each with its extra, imported when used) AWS Secrets Manager,
Vault, Google Secret Manager, Databricks, Airflow."""

from .airflow import AirflowSecretStore
from .aws import AwsSecretsManagerStore
from .base import SecretStore
from .command import CommandSecretStore
from .directory import DirectorySecretStore
from .encrypted import EncryptedFileSecretStore, generate_key
from .env import EnvSecretStore
from .memory import MemorySecretStore
from .databricks import DatabricksSecretStore
from .gcp_secret_manager import GcpSecretManagerStore
from .vault import VaultSecretStore

__all__ = ["SecretStore", "AirflowSecretStore", "AwsSecretsManagerStore", "CommandSecretStore", "DatabricksSecretStore", "DirectorySecretStore",
           "EncryptedFileSecretStore", "EnvSecretStore", "GcpSecretManagerStore", "MemorySecretStore", "VaultSecretStore",
           "generate_key"]
