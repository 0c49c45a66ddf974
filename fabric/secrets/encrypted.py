"""An encrypted local secret file: AES-256-GCM (``cryptography``), key from an env var or key file.

File format (JSON)::

    {"format": "mailgem-secrets/1",
     "secrets": {"NAME": {"nonce": "<base64, 12 bytes>", "ciphertext": "<base64>"}}}

Each value is sealed with a fresh 96-bit random nonce (NIST SP 800-38D §8.2.2) and the secret's
name as associated data, so a ciphertext moved to another name fails to decrypt.

Where the key comes from, one rule: the store's ``key_file`` when it names one, otherwise the
environment variable ``key_env`` (default ``MAILGEM_SECRETS_KEY``). A variable that is set while
the store names a key file is not used (a warning says so). Every error names the source it
used, and :meth:`EncryptedFileSecretStore.set` refuses a key that does not open the secrets
already in the file, so a store is never sealed under two keys.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from ..errors import SecretNotFoundError, SecretStoreError
from .base import SecretStore

__all__ = ["EncryptedFileSecretStore", "generate_key"]

log = logging.getLogger("mailgem.fabric")

FORMAT = "mailgem-secrets/1"
DEFAULT_KEY_ENV = "MAILGEM_SECRETS_KEY"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12


def generate_key() -> str:
    """A new random 256-bit key, URL-safe base64 (44 characters)."""
    return base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)).decode("ascii")


class EncryptedFileSecretStore(SecretStore):
    """Secrets in one AES-256-GCM encrypted JSON file.

    Args:
        path: the store file; created on first :meth:`set`.
        key_env: environment variable holding the base64 key (default ``MAILGEM_SECRETS_KEY``);
            read only when there is no ``key_file``.
        key_file: file holding the base64 key; when given, it is the key.
        fabric_path: the fabric file the store belongs to, named in hints (``--fabric PATH``).

    Raises (from get/set/names):
        SecretStoreError: no key, a malformed key, a wrong key, or a corrupt file; the message
            names the key source used.
    """

    kind = "encrypted_file"
    writable = True

    def __init__(self, path: Path, key_env: str | None = None, key_file: Path | None = None, *,
                 fabric_path: Path | None = None) -> None:
        self.path = Path(path)
        self.key_env = key_env or DEFAULT_KEY_ENV
        self.key_file = Path(key_file) if key_file else None
        self.fabric_path = fabric_path

    def __repr__(self) -> str:
        return f"EncryptedFileSecretStore(path={str(self.path)!r}, key_env={self.key_env!r}, key_file={str(self.key_file) if self.key_file else None!r})"

    @property
    def key_source(self) -> str:
        """Where the key is read from, in words (see the module docstring for the rule)."""
        return f"key file {self.key_file}" if self.key_file is not None else f"environment variable {self.key_env}"

    def _aead(self) -> AESGCM:
        if self.key_file is not None:
            try:
                if not self.key_file.is_file():
                    raise SecretStoreError(f"key file {self.key_file} does not exist; create one with `mailgem secrets keygen --key-file {self.key_file}`")
                raw = self.key_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SecretStoreError(f"key file {self.key_file} cannot be read: {exc.strerror or exc}") from None
            if os.environ.get(self.key_env, raw).strip() != raw:
                log.warning("%s is set but the secret store %s takes its key from key file %s; the variable is not "
                            "used", self.key_env, self.path, self.key_file)
        else:
            from_env = os.environ.get(self.key_env)
            if from_env is None:
                raise SecretStoreError(
                    f"no key for the encrypted secret store {self.path}: set the environment variable {self.key_env}, "
                    "or name a key_file in the fabric (generate a key with `mailgem secrets keygen`)")
            raw = from_env
        try:
            key = base64.urlsafe_b64decode(raw.strip())
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise SecretStoreError(f"the key in {self.key_source} is not a base64-encoded 256-bit key (44 characters); generate one with `mailgem secrets keygen`")
        return AESGCM(key)

    def _open(self, aead: AESGCM, name: str, entry: dict[str, str]) -> bytes:
        try:
            return aead.decrypt(base64.b64decode(entry["nonce"]), base64.b64decode(entry["ciphertext"]), name.encode())
        except (InvalidTag, KeyError, TypeError, binascii.Error, ValueError):
            raise SecretStoreError(
                f"could not decrypt secret {name!r} in {self.path} with the key from {self.key_source}: the key is "
                "not the one it was stored with, or the file was altered") from None

    def _set_hint(self, name: str) -> str:
        fabric = f" --fabric {self.fabric_path}" if self.fabric_path is not None else ""
        return f"`mailgem secrets set {name}{fabric}`"

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            if not self.path.exists():
                return {}
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SecretStoreError(f"secret store {self.path} is not readable JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("secrets"), dict):
            raise SecretStoreError(f"secret store {self.path} is not a {FORMAT} file")
        secrets: dict[str, dict[str, str]] = doc["secrets"]
        return secrets

    def get(self, name: str) -> SecretStr:
        entry = self._read().get(self.check_name(name))
        if entry is None:
            raise SecretNotFoundError(f"secret {name!r} not found in {self.path}: add it with {self._set_hint(name)}")
        return SecretStr(self._open(self._aead(), name, entry).decode("utf-8"))

    def set(self, name: str, value: SecretStr) -> None:
        """Store ``value`` under ``name``.

        Raises:
            SecretStoreError: the value is empty or only whitespace; the key does not open the
                secrets already in the file (nothing is written: the store would otherwise hold
                secrets under two keys).
        """
        self.check_name(name)
        self.check_value(name, value, self._set_hint(name))
        aead = self._aead()
        secrets = self._read()
        others = sorted(n for n in secrets if n != name)
        for other in others:
            try:
                self._open(aead, other, secrets[other])
            except SecretStoreError:
                raise SecretStoreError(
                    f"the key from {self.key_source} does not open the secrets already in {self.path} (e.g. {other!r}): "
                    "they were stored with another key. Nothing was written; use the key they were stored with, "
                    "or a new store file for a new key") from None
        nonce = os.urandom(NONCE_BYTES)
        sealed = aead.encrypt(nonce, value.get_secret_value().encode("utf-8"), name.encode())
        secrets[name] = {"nonce": base64.b64encode(nonce).decode(), "ciphertext": base64.b64encode(sealed).decode()}
        self._write(secrets)

    def delete(self, name: str) -> None:
        """Remove ``name`` (no key needed: nothing is decrypted or sealed).

        Raises:
            SecretNotFoundError: the store has no such secret.
        """
        secrets = self._read()
        if secrets.pop(self.check_name(name), None) is None:
            raise SecretNotFoundError(f"secret {name!r} not found in {self.path} (it has: {', '.join(sorted(secrets)) or 'none'})")
        self._write(secrets)

    def _write(self, secrets: dict[str, dict[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        # Write-then-rename so a crash never leaves a half-written store; 0600 as it holds secrets.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT, "secrets": dict(sorted(secrets.items()))}, f, indent=2)
        os.replace(tmp, self.path)

    def names(self) -> list[str]:
        return sorted(self._read())
