"""A team's execution environment: teams, secret store, SMTP connections."""

from .errors import AccessDeniedError, FabricConfigError, SecretNotFoundError, SecretStoreError
from .loader import interpolate, load_fabric, load_yaml
from .local import LOCAL_CONNECTION, LocalFabric, local_fabric
from .model import Fabric, Team, current_user
from .secrets import (
    AwsSecretsManagerStore,
    CommandSecretStore,
    DirectorySecretStore,
    EncryptedFileSecretStore,
    EnvSecretStore,
    MemorySecretStore,
    SecretStore,
    generate_key,
)

__all__ = [
    "AccessDeniedError", "FabricConfigError", "SecretNotFoundError", "SecretStoreError",
    "interpolate", "load_fabric", "load_yaml", "LOCAL_CONNECTION", "LocalFabric", "local_fabric",
    "Fabric", "Team", "current_user", "DirectorySecretStore", "EncryptedFileSecretStore",
    "EnvSecretStore", "MemorySecretStore", "SecretStore", "generate_key", "CommandSecretStore",
    "AwsSecretsManagerStore",
]
