"""An encrypted local secret file: AES-256-GCM (``cryptography``), key from an env var or key file.

File format (JSON)::

    {"format": "mailgem-secrets/1",
     "secrets": {"NAME": {"nonce": "<base64, 12 bytes>", "ciphertext": "<base64>"}}}

Each value is sealed with a fresh 96-bit random nonce (NIST SP 800-38D §8.2.2) and the secret's
name as associated data, so a ciphertext moved to another name fails to decrypt.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from ..errors import SecretNotFoundError, SecretStoreError
from .base import SecretStore

__all__ = ["EncryptedFileSecretStore", "generate_key"]

FORMAT = "mailgem-secrets/1"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12


def generate_key() -> str:
    """A new random 256-bit key, URL-safe base64 (44 characters)."""
    return base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)).decode("ascii")


class EncryptedFileSecretStore(SecretStore):
    """Secrets in one AES-256-GCM encrypted JSON file.

    Args:
        path: the store file; created on first :meth:`set`.
        key_env: environment variable holding the base64 key (default ``MAILGEM_SECRETS_KEY``).
        key_file: file holding the base64 key, used when the variable is not set.

    Raises (from get/set/names):
        SecretStoreError: no key, a malformed key, a wrong key, or a corrupt file.
    """

    kind = "encrypted_file"

    def __init__(self, path: Path, key_env: str = "MAILGEM_SECRETS_KEY", key_file: Path | None = None) -> None:
        self.path = Path(path)
        self.key_env = key_env
        self.key_file = Path(key_file) if key_file else None

    def __repr__(self) -> str:
        return f"EncryptedFileSecretStore(path={str(self.path)!r}, key_env={self.key_env!r}, key_file={str(self.key_file) if self.key_file else None!r})"

    def _aead(self) -> AESGCM:
        raw = os.environ.get(self.key_env)
        source = f"environment variable {self.key_env}"
        if raw is None and self.key_file is not None:
            if not self.key_file.is_file():
                raise SecretStoreError(f"key file {self.key_file} does not exist; create one with `mailgem secrets keygen --key-file {self.key_file}`")
            raw = self.key_file.read_text(encoding="utf-8").strip()
            source = f"key file {self.key_file}"
        if raw is None:
            raise SecretStoreError(
                f"no key for the encrypted secret store {self.path}: set {self.key_env} or key_file "
                "(generate one with `mailgem secrets keygen`)")
        try:
            key = base64.urlsafe_b64decode(raw.strip())
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise SecretStoreError(f"the key in {source} is not a base64-encoded 256-bit key (44 characters); generate one with `mailgem secrets keygen`")
        return AESGCM(key)

    def _read(self) -> dict[str, dict[str, str]]:
        if not self.path.exists():
            return {}
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SecretStoreError(f"secret store {self.path} is not readable JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("secrets"), dict):
            raise SecretStoreError(f"secret store {self.path} is not a {FORMAT} file")
        return doc["secrets"]

    def get(self, name: str) -> SecretStr:
        entry = self._read().get(self.check_name(name))
        if entry is None:
            raise SecretNotFoundError(f"secret {name!r} not found in {self.path}: add it with `mailgem secrets set {name}`")
        aead = self._aead()
        try:
            plain = aead.decrypt(base64.b64decode(entry["nonce"]), base64.b64decode(entry["ciphertext"]), name.encode())
        except (InvalidTag, KeyError, binascii.Error, ValueError):
            raise SecretStoreError(
                f"could not decrypt secret {name!r} in {self.path}: the key is not the one it was stored with, "
                "or the file was altered") from None
        return SecretStr(plain.decode("utf-8"))

    def set(self, name: str, value: SecretStr) -> None:
        self.check_name(name)
        aead = self._aead()
        secrets = self._read()
        nonce = os.urandom(NONCE_BYTES)
        sealed = aead.encrypt(nonce, value.get_secret_value().encode("utf-8"), name.encode())
        secrets[name] = {"nonce": base64.b64encode(nonce).decode(), "ciphertext": base64.b64encode(sealed).decode()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        # Write-then-rename so a crash never leaves a half-written store; 0600 as it holds secrets.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT, "secrets": dict(sorted(secrets.items()))}, f, indent=2)
        os.replace(tmp, self.path)

    def names(self) -> list[str]:
        return sorted(self._read())
