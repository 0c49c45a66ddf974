"""Secret stores behind one protocol: environment variables, a directory of files, an encrypted file."""

from .base import SecretStore
from .directory import DirectorySecretStore
from .encrypted import EncryptedFileSecretStore, generate_key
from .env import EnvSecretStore
from .memory import MemorySecretStore

__all__ = ["SecretStore", "DirectorySecretStore", "EncryptedFileSecretStore", "EnvSecretStore", "MemorySecretStore", "generate_key"]
