"""Secrets in AWS Secrets Manager (boto3, extra ``aws``).

Secret ``smtp/reports`` is the SecretString of the AWS secret ``<prefix>smtp/reports``;
``smtp/reports#password`` is the key ``password`` of that SecretString read as a JSON object
(the form the AWS console stores key/value secrets in). Credentials come from boto3's usual
chain (environment, ``~/.aws``, SSO, an instance or task role), never from the fabric file.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from pydantic import SecretStr

from ..errors import SecretNotFoundError, SecretStoreError
from .base import SecretStore

__all__ = ["AwsSecretsManagerStore", "split_key"]

log = logging.getLogger("mailgem.fabric")

# botocore ClientError codes, and what the user should check for each.
_NOT_FOUND = {"ResourceNotFoundException"}
_HINTS = {
    "AccessDeniedException": "permission denied: check that the IAM policy of these credentials allows "
                             "secretsmanager:GetSecretValue on the secret (and kms:Decrypt on its KMS key)",
    "DecryptionFailure": "AWS cannot decrypt the secret with its KMS key: check kms:Decrypt on that key for "
                         "these credentials, and that the key is enabled",
    "InvalidRequestException": "the secret cannot be read now (scheduled for deletion?): check it in the AWS console",
    "InternalServiceError": "an AWS-side error: try again",
}
_DENIED = {"AccessDeniedException", "AccessDenied"}
_EXPIRED = {"ExpiredTokenException", "ExpiredToken", "RequestExpired", "UnrecognizedClientException",
            "InvalidClientTokenId", "InvalidSignatureException", "SignatureDoesNotMatch"}


class _NoResponseBodies(logging.Filter):
    """Drops botocore's DEBUG log of response headers and bodies: a GetSecretValue body holds
    the secret's value, and a debug log of the whole process must not show it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


def _drop_response_bodies() -> None:
    """Install :class:`_NoResponseBodies` on botocore's parser logger (once)."""
    parsers = logging.getLogger("botocore.parsers")
    if not any(isinstance(f, _NoResponseBodies) for f in parsers.filters):
        parsers.addFilter(_NoResponseBodies())


def split_key(name: str) -> tuple[str, str | None]:
    """``"smtp/reports#password"`` → ``("smtp/reports", "password")``; no ``#`` → ``(name, None)``.

    Raises:
        SecretStoreError: an empty secret name or an empty key.
    """
    secret, sep, key = name.partition("#")
    if not secret or (sep and not key):
        raise SecretStoreError(f"invalid secret name {name!r}: write NAME or NAME#JSON_KEY")
    return secret, key if sep else None


def _error_code(error: dict[str, Any]) -> str:
    """The AWS error code of a botocore error. A 403 answered with an XML body instead of the
    service's JSON (an HTTP proxy or endpoint in between; moto's IAM check) reaches botocore as
    code ``403`` with the XML as its message: the code inside that XML is the one that says what
    to check."""
    code = str(error.get("Code", ""))
    if code.isdigit():
        match = re.search(r"<Code>([A-Za-z.]+)</Code>", str(error.get("Message", "")))
        if match:
            return match.group(1)
    return code


class AwsSecretsManagerStore(SecretStore):
    """Secrets in AWS Secrets Manager.

    Args:
        region: the AWS region of the secrets (``eu-west-1``).
        prefix: prepended to every name (``mailgem/`` reads ``mailgem/smtp``); :meth:`names` lists
            only names under it, without it.
        endpoint_url: another endpoint (a VPC interface endpoint, a test server).

    Each AWS secret is fetched once per store object (the run reads each secret once, when it
    starts); ``name#key`` and ``name#other`` share one call.

    Raises (from get/names):
        SecretNotFoundError: no such secret (check the name, the prefix and the region), or no
            such key in its JSON.
        SecretStoreError: permission denied, decryption failure, expired or missing credentials,
            an unreachable endpoint, a SecretString that is not a JSON object when a key is asked.
            Messages name the store and the secret, never a value.
    """

    kind = "aws_secrets_manager"
    keeps_values = True

    def __init__(self, region: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        self.region = region
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self._client: Any = None
        self._strings: dict[str, SecretStr] = {}  # AWS SecretId -> SecretString

    def __repr__(self) -> str:
        return (f"AwsSecretsManagerStore(region={self.region!r}, prefix={self.prefix!r}, "
                f"endpoint_url={self.endpoint_url!r})")

    def __getstate__(self) -> dict[str, Any]:
        # A fabric may travel with a gem to Spark workers: a boto3 client does not pickle, and a
        # worker makes its own on first use.
        return {**self.__dict__, "_client": None}

    def _where(self, name: str) -> str:
        return f"aws_secrets_manager secret store (region {self.region}): secret {name!r} (AWS name {self.prefix + name!r})"

    def client(self) -> Any:
        """The boto3 Secrets Manager client, made on first use (no AWS call before a secret is read)."""
        if self._client is None:
            import boto3  # the extra `aws`; checked when the store is built from a fabric

            _drop_response_bodies()
            self._client = boto3.session.Session().client(
                "secretsmanager", region_name=self.region, endpoint_url=self.endpoint_url)
        return self._client

    def get(self, name: str) -> SecretStr:
        secret, key = split_key(name)
        text = self._secret_string(secret)
        if key is None:
            return text
        try:
            doc = json.loads(text.get_secret_value())
        except ValueError:  # the exception's text may quote the value: not shown
            doc = None
        if not isinstance(doc, dict):
            raise SecretStoreError(f"{self._where(secret)}: asked for its JSON key {key!r}, but its SecretString "
                                   "is not a JSON object: drop #KEY or store the secret as key/value pairs")
        if key not in doc:
            raise SecretNotFoundError(f"{self._where(secret)} has no JSON key {key!r} (its keys: "
                                      f"{', '.join(sorted(map(str, doc))) or 'none'})")
        value = doc[key]
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise SecretStoreError(f"{self._where(secret)}: JSON key {key!r} holds a {type(value).__name__}, not a "
                                   "string")
        return SecretStr(str(value))

    def _secret_string(self, secret: str) -> SecretStr:
        secret_id = self.prefix + secret
        if secret_id in self._strings:  # read once per run
            return self._strings[secret_id]
        response = self._call(lambda c: c.get_secret_value(SecretId=secret_id), secret)
        if response.get("SecretString") is not None:
            text = response["SecretString"]
        else:
            try:
                text = bytes(response.get("SecretBinary") or b"").decode("utf-8")
            except UnicodeDecodeError:
                raise SecretStoreError(f"{self._where(secret)} is binary, not text: store it as a "
                                       "SecretString") from None
        if not text.strip():
            raise SecretStoreError(f"{self._where(secret)} is empty: set its value in Secrets Manager")
        log.debug("aws_secrets_manager secret store: read secret %r", secret_id)
        value = self._strings[secret_id] = SecretStr(text)
        return value

    def names(self) -> list[str]:
        kwargs: dict[str, Any] = {"Filters": [{"Key": "name", "Values": [self.prefix]}]} if self.prefix else {}

        def list_all(client: Any) -> list[str]:
            pages = client.get_paginator("list_secrets").paginate(**kwargs)
            return [s["Name"] for page in pages for s in page.get("SecretList", [])]

        names = self._call(list_all, None)
        # The name filter matches words anywhere in a name too: keep what starts with the prefix.
        return sorted(n[len(self.prefix):] for n in names if n.startswith(self.prefix) and n != self.prefix)

    def _call(self, call: Any, secret: str | None) -> Any:
        """``call(client)``, with botocore's errors turned into messages saying what to check."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = self._where(secret) if secret is not None else (
            f"aws_secrets_manager secret store (region {self.region}, prefix {self.prefix!r}): listing")
        try:
            return call(self.client())
        except ClientError as exc:
            code = _error_code(exc.response.get("Error", {}))
            if code in _NOT_FOUND:
                raise SecretNotFoundError(f"{where}: not found: check the name, the store's prefix and its "
                                          "region") from None
            if code in _DENIED:
                code = "AccessDeniedException"
            if code in _EXPIRED:
                hint = ("the AWS credentials are expired or not valid: refresh them (aws sso login, a new "
                        "session token, the instance role) and check AWS_PROFILE")
            else:
                hint = _HINTS.get(code, f"AWS answered {code or 'an error'}")
            raise SecretStoreError(f"{where}: {hint}") from None
        except NoCredentialsError:
            raise SecretStoreError(f"{where}: no AWS credentials found: set AWS_PROFILE or the AWS_ACCESS_KEY_ID "
                                   "environment, or run where an instance or task role applies") from None
        except BotoCoreError as exc:  # unreachable endpoint, bad region: botocore's text has no value
            raise SecretStoreError(f"{where}: {exc}") from None
