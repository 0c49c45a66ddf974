"""Secret stores behind one protocol: environment variables, a directory of files, an encrypted
file, and (each with its extra, imported when used) Vault, Google Secret Manager, Databricks."""

from .base import SecretStore
from .directory import DirectorySecretStore
from .encrypted import EncryptedFileSecretStore, generate_key
from .env import EnvSecretStore
from .memory import MemorySecretStore
from .databricks import DatabricksSecretStore
from .gcp_secret_manager import GcpSecretManagerStore
from .vault import VaultSecretStore

__all__ = ["SecretStore", "DirectorySecretStore", "EncryptedFileSecretStore", "EnvSecretStore", "MemorySecretStore", "generate_key",
           "DatabricksSecretStore", "GcpSecretManagerStore", "VaultSecretStore"]
