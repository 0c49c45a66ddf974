"""Secret stores behind one protocol: environment variables, a directory of files, an encrypted file,
a command's output, AWS Secrets Manager (boto3 imported only when that store is used)."""

from .aws import AwsSecretsManagerStore
from .base import SecretStore
from .command import CommandSecretStore
from .directory import DirectorySecretStore
from .encrypted import EncryptedFileSecretStore, generate_key
from .env import EnvSecretStore
from .memory import MemorySecretStore

__all__ = ["SecretStore", "AwsSecretsManagerStore", "CommandSecretStore", "DirectorySecretStore", "EncryptedFileSecretStore", "EnvSecretStore", "MemorySecretStore", "generate_key"]
