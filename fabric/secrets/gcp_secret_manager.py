"""Secrets from Google Cloud Secret Manager, through google-cloud-secret-manager (extra ``gcp``).

Secret ``smtp-password`` is ``projects/<project>/secrets/smtp-password/versions/<version>``
(version ``latest`` unless the store names one). Credentials are Application Default
Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, the metadata server, ``gcloud auth
application-default login``); the client talks to the REST API.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from pydantic import SecretStr

from ..errors import SecretNotFoundError, SecretStoreError
from .remote import RemoteSecretStore, require

__all__ = ["GcpSecretManagerStore"]

GCP_SECRET_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


class _NoPayload(logging.Filter):
    """At DEBUG the client logs each REST response in the record's extra ``httpResponse``, whose
    ``payload`` would be the secret, base64-encoded (google's structured handler writes extras
    out; this client version happens to leave it None). Those records keep all but the payload."""

    def filter(self, record: logging.LogRecord) -> bool:
        response = getattr(record, "httpResponse", None)
        if isinstance(response, dict) and "payload" in response:
            record.httpResponse = {**response, "payload": "(withheld by mailgem)"}
        return True


_CLIENT_LOGGER = "google.cloud.secretmanager_v1.services.secret_manager_service.transports.rest"
_NO_PAYLOAD = _NoPayload()


def _status(exc: Exception) -> str:
    """Google's status word (``FAILED_PRECONDITION``) from a REST error's body, or ``""``."""
    try:
        return str(exc.response.json()["error"]["status"])  # type: ignore[attr-defined]
    except Exception:
        return ""


class GcpSecretManagerStore(RemoteSecretStore):
    """Read-only secrets of one Google Cloud project; each read once per instance.

    ``endpoint`` replaces the API's address (a private endpoint, or a local server in tests;
    ``http://`` is kept as given); ``anonymous`` sends no credentials (only for such endpoints).
    """

    kind = "gcp_secret_manager"

    def __init__(self, project: str, version: str = "latest", *, endpoint: str | None = None,
                 anonymous: bool = False, timeout_s: float = 10.0) -> None:
        super().__init__()
        self.project, self.version, self.endpoint = project, version, endpoint
        self.anonymous, self.timeout_s = anonymous, timeout_s
        self._client: Any = None

    def __repr__(self) -> str:
        return f"GcpSecretManagerStore(project={self.project!r}, version={self.version!r}, endpoint={self.endpoint!r})"

    def _connect(self) -> Any:
        """The Secret Manager client with its REST transport (created once)."""
        secretmanager = require("google.cloud.secretmanager", "gcp", self.kind)
        if self._client is None:
            logging.getLogger(_CLIENT_LOGGER).addFilter(_NO_PAYLOAD)  # once: filters are a set
            options = {"api_endpoint": self.endpoint} if self.endpoint else None
            credentials = None
            if self.anonymous:
                credentials = require("google.auth.credentials", "gcp", self.kind).AnonymousCredentials()
            try:
                self._client = secretmanager.SecretManagerServiceClient(
                    transport="rest", client_options=options, credentials=credentials)
            except Exception as exc:  # google.auth's DefaultCredentialsError above all
                raise SecretStoreError(
                    f"gcp_secret_manager secret store (project {self.project!r}): no usable credentials "
                    f"({type(exc).__name__}): set GOOGLE_APPLICATION_CREDENTIALS or run "
                    "`gcloud auth application-default login`") from None
        return self._client

    def _refused(self, exc: Exception, what: str) -> SecretStoreError | SecretNotFoundError:
        # The REST transport maps HTTP codes: 403 Forbidden, 401 Unauthorized, 400 BadRequest
        # (Google's status, e.g. FAILED_PRECONDITION, is in the body).
        core = require("google.api_core.exceptions", "gcp", self.kind)
        auth = require("google.auth.exceptions", "gcp", self.kind)
        at = f"gcp_secret_manager secret store (project {self.project!r})"
        if isinstance(exc, core.NotFound):
            return SecretNotFoundError(f"{at}: {what} not found: check the secret's name, the project and "
                                       f"that version {self.version!r} exists")
        if isinstance(exc, core.Forbidden):
            return SecretStoreError(f"{at}: permission denied for {what}: grant the caller "
                                    "roles/secretmanager.secretAccessor (list: secretmanager.secrets.list)")
        if isinstance(exc, core.Unauthorized | auth.GoogleAuthError):
            return SecretStoreError(f"{at}: credentials refused for {what}: they are invalid or expired "
                                    "(`gcloud auth application-default login`, or the service account's key)")
        if isinstance(exc, core.FailedPrecondition) or _status(exc) == "FAILED_PRECONDITION":
            return SecretStoreError(f"{at}: {what}: version {self.version!r} is disabled or destroyed: "
                                    "enable it or name another version")
        if isinstance(exc, core.GoogleAPICallError):
            return SecretStoreError(f"{at}: {what}: the API answered {type(exc).__name__}")
        return SecretStoreError(f"{at}: cannot reach Secret Manager for {what} ({type(exc).__name__}): "
                                "check the endpoint, the network and the credentials")

    def _read(self, name: str) -> SecretStr:
        if not GCP_SECRET_NAME.match(name):
            raise SecretStoreError(f"invalid Secret Manager secret name {name!r}: use letters, digits, _ and -")
        client = self._connect()
        what = f"secret {name!r}"
        path = f"projects/{self.project}/secrets/{name}/versions/{self.version}"
        try:
            answer = client.access_secret_version(request={"name": path}, timeout=self.timeout_s)
        except Exception as exc:
            raise self._refused(exc, what) from None
        try:
            return SecretStr(answer.payload.data.decode("utf-8"))
        except UnicodeDecodeError:
            raise SecretStoreError(f"gcp_secret_manager secret store (project {self.project!r}): {what} "
                                   "is not UTF-8 text") from None

    def names(self) -> list[str]:
        """The project's secret names, sorted.

        Raises:
            SecretStoreError: listing is refused or fails.
        """
        client = self._connect()
        try:
            return sorted(s.name.rsplit("/", 1)[-1]
                          for s in client.list_secrets(request={"parent": f"projects/{self.project}"},
                                                       timeout=self.timeout_s))
        except Exception as exc:
            raise self._refused(exc, "the list of secrets") from None
