"""DKIM signatures (RFC 6376) on the bytes that go to the server, with dkimpy.

A connection with ``dkim: {domain, selector, private_key: {secret: NAME}, headers: [...]}``
signs every message it sends: relaxed/relaxed canonicalisation (RFC 6376 §3.4, which survives
the header refolding and whitespace changes relays make), ``rsa-sha256`` for an RSA key (at
least 1,024 bits, RFC 8301 §3.2; 2,048 recommended) or ``ed25519-sha256`` for an Ed25519 key
(RFC 8463), chosen by the key. Signing happens in the session, on the final bytes (after the
connection's From is in and every header is folded), so nothing changes what was signed.

The private key is a PEM file's text in the fabric's secret store (PKCS#8 or traditional),
resolved like the SMTP password and never logged. dkimpy (``mailgem[dkim]``) is imported only
by a connection that signs.

Cost on ``per_row`` (measured on this project's machine, dkimpy 1.1.8, ~2 KB messages):
``ed25519-sha256`` adds about 0.3 ms a message; ``rsa-sha256`` with a 2,048-bit key about 7.5 ms
(dkimpy's RSA is Python integer arithmetic). Where throughput matters, sign with Ed25519.
"""

from __future__ import annotations

import base64
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from .errors import ConfigError
from .secretref import SecretRef

__all__ = ["DkimOptions", "DkimSigner"]

# RFC 6376 §5.4.1: From must be signed; these are the others worth signing when present.
DEFAULT_HEADERS = ("from", "to", "cc", "subject", "date", "message-id", "reply-to", "mime-version", "content-type",
                   "content-transfer-encoding", "in-reply-to", "references", "list-unsubscribe", "auto-submitted")


class DkimOptions(BaseModel):
    """``dkim:`` on a connection: the signing domain (``d=``), the selector (``s=``; the public
    key is published at ``SELECTOR._domainkey.DOMAIN``), the private key's secret, and the
    headers to sign (default: :data:`DEFAULT_HEADERS` that are present; From is always signed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    domain: str = Field(min_length=1, description="Signing domain (d=): the sender's domain or a parent of it (DMARC alignment).")
    selector: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
                          description="Selector (s=): the key is published at SELECTOR._domainkey.DOMAIN.")
    private_key: SecretRef = Field(description="Secret holding the private key's PEM text: {secret: NAME}.")
    headers: tuple[str, ...] = Field(default=DEFAULT_HEADERS, description="Header fields to sign (From is always signed).")


    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return value.strip().strip(".").lower()

    @field_validator("headers", mode="before")
    @classmethod
    def _from_is_signed(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            names = [v.strip().lower() if isinstance(v, str) else "" for v in value]
            if any(not n or ":" in n or " " in n for n in names):
                raise ValueError("dkim.headers: header field names, e.g. [from, to, subject, date]")
            return tuple(dict.fromkeys(["from", *names]))  # RFC 6376 §5.4.1: From MUST be signed
        return value


class DkimSigner:
    """Signs messages for one connection with its resolved private key.

    Raises (on construction):
        ConfigError: the key is not a PEM private key, not RSA or Ed25519, or an RSA key under
            1,024 bits; dkimpy is not installed.
    """

    def __init__(self, options: DkimOptions, private_key: SecretStr) -> None:
        try:
            import dkim
        except ImportError:
            raise ConfigError("the connection signs with DKIM, and dkimpy is not installed: "
                              "pip install 'mailgem[dkim]'") from None
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

        self._dkim = dkim
        self.options = options
        try:
            key = serialization.load_pem_private_key(private_key.get_secret_value().encode(), password=None)
        except (ValueError, TypeError):
            raise ConfigError(f"dkim.private_key ({options.private_key.secret}): not an unencrypted PEM private key; "
                              "store the PEM text of an RSA or Ed25519 key (e.g. from openssl genpkey)") from None
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size < 1024:
                raise ConfigError(f"dkim.private_key: a {key.key_size}-bit RSA key is too short: DKIM needs at least "
                                  "1,024 bits (RFC 8301 §3.2); use 2,048")
            self.algorithm = b"rsa-sha256"
            self._key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption())
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            self.algorithm = b"ed25519-sha256"
            self._key = base64.b64encode(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                           serialization.NoEncryption()))
        else:
            raise ConfigError(f"dkim.private_key: a {type(key).__name__} cannot sign DKIM: use RSA or Ed25519")
        self._selector = options.selector.encode()
        self._domain = options.domain.encode()
        self._headers = [h.encode() for h in options.headers]

    def __repr__(self) -> str:
        return f"DkimSigner(domain={self.options.domain!r}, selector={self.options.selector!r}, {self.algorithm.decode()})"

    def sign(self, data: bytes) -> bytes:
        """``data`` (a whole message, CRLF line endings) with its ``DKIM-Signature`` header first."""
        signature = self._dkim.sign(data, self._selector, self._domain, self._key,
                                    canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=self.algorithm,
                                    include_headers=self._headers)
        return signature + data
