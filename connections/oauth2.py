"""OAuth2 for SMTP: an access token from the provider's token endpoint, sent with SASL XOAUTH2.

``auth: {type: oauth2, provider: office365 | google | generic, ...}`` on a connection. The token
comes over HTTPS from ``token_url`` (authlib's OAuth2 client on httpx), by the *refresh token*
grant (Google: a user's consent, given once, held in a secret) or the *client credentials*
grant (Microsoft's app-only SMTP flow, RFC 6749 §4.4), is cached until shortly before it
expires and fetched again when a new session needs it, so long runs keep working. It is sent
with ``AUTH XOAUTH2`` (aiosmtplib builds the SASL string). When the server refuses it, its
``334`` challenge carries a JSON error (Google) or the ``535`` reply a code (Microsoft); both are
turned into a sentence with the fix.

Client secrets, refresh tokens and access tokens are secrets: resolved from the fabric's
store, held as ``SecretStr``, never logged, never in a ``repr`` or an error.

Providers (defaults; ``token_url`` and ``scope`` may be given to override):

- ``google``: ``https://oauth2.googleapis.com/token``, refresh token grant, scope
  ``https://mail.google.com/``.
- ``office365``: ``https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token``, client
  credentials grant, scope ``https://outlook.office365.com/.default``; the app needs the
  ``SMTP.SendAsApp`` permission and access to the mailbox (Exchange Online PowerShell:
  ``Add-MailboxPermission``), and the mailbox needs authenticated SMTP enabled.
- ``generic``: ``token_url`` and ``scope`` as given; refresh token grant when ``refresh_token``
  is set, client credentials otherwise.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import time
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from .errors import AuthenticationError, ConfigError, redact
from .secretref import SecretRef

__all__ = ["OAuth2Options", "TokenSource", "explain_refusal"]

log = logging.getLogger("mailgem.connections")

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
GOOGLE_SCOPE = "https://mail.google.com/"
OFFICE365_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
OFFICE365_SCOPE = "https://outlook.office365.com/.default"
# A cached token is used until this close to its expiry (seconds; a tenth of a short lifetime).
REFRESH_MARGIN_S = 60.0


class OAuth2Options(BaseModel):
    """``auth: {type: oauth2, ...}``: see the module docstring."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)
    type: Literal["oauth2"]
    provider: Literal["office365", "google", "generic"] = "generic"
    token_url: str | None = Field(default=None, description="HTTPS token endpoint; from the provider when not given.")
    tenant: str | None = Field(default=None, description="office365: the directory (tenant) ID or domain.")
    client_id: str = Field(min_length=1, description="The application's client ID.")
    client_secret: SecretRef | None = Field(default=None, description="Secret holding the client secret: {secret: NAME}.")
    refresh_token: SecretRef | None = Field(default=None, description="Secret holding a refresh token (google, generic): {secret: NAME}.")
    scope: str | None = Field(default=None, description="Scope to ask for; from the provider when not given.")
    ca_bundle: Path | None = Field(default=None, description="PEM file of CAs to verify the token endpoint with (a private "
                                                     "identity provider); the system's CAs otherwise.")


    @model_validator(mode="after")
    def _complete(self) -> OAuth2Options:
        if self.provider == "office365" and self.token_url is None and not self.tenant:
            raise ValueError("auth: office365 needs tenant (the directory ID or domain) or token_url")
        if self.provider == "office365" and self.client_secret is None:
            raise ValueError("auth: office365's app-only SMTP flow needs client_secret: {secret: NAME}")
        if self.provider == "google" and self.refresh_token is None:
            raise ValueError("auth: google needs refresh_token: {secret: NAME} (the user's consent, given once)")
        if self.provider == "generic" and (self.token_url is None or self.scope is None):
            raise ValueError("auth: a generic provider needs token_url and scope")
        if self.token_url is not None and not self.token_url.startswith("https://"):
            raise ValueError("auth.token_url must be https:// (the client secret travels to it)")
        return self

    @property
    def url(self) -> str:
        if self.token_url is not None:
            return self.token_url
        return GOOGLE_TOKEN_URL if self.provider == "google" else OFFICE365_TOKEN_URL.format(tenant=self.tenant)

    @property
    def scopes(self) -> str:
        if self.scope is not None:
            return self.scope
        return GOOGLE_SCOPE if self.provider == "google" else OFFICE365_SCOPE

    @property
    def grant(self) -> Literal["refresh_token", "client_credentials"]:
        return "refresh_token" if self.refresh_token is not None else "client_credentials"

    def describe(self) -> str:
        """One line for ``mailgem connection test`` (no secret values)."""
        names = ", ".join(f"{n} from secret {r.secret!r}" for n, r in
                          (("client_secret", self.client_secret), ("refresh_token", self.refresh_token)) if r)
        return f"oauth2 ({self.provider}, {self.grant} grant) from {self.url}, scope {self.scopes}; {names}"

    def secrets(self) -> list[str]:
        """Names of the secrets this needs from the fabric's store."""
        return [ref.secret for ref in (self.client_secret, self.refresh_token) if ref is not None]


class TokenSource:
    """Access tokens for one connection: fetched from the token endpoint, cached until
    :data:`REFRESH_MARGIN_S` (or a tenth of the lifetime) before expiry. Picklable: a cached token
    travels to Spark executors with the transport; each fetches its own when it runs out.

    Args:
        options: the connection's ``auth``.
        secrets: the resolved secrets by name (client secret, refresh token).
        verify: what the endpoint's certificate is verified with: ``True`` (the system's CAs) or
            the path of a PEM file of CAs (a private identity provider).
    """

    def __init__(self, options: OAuth2Options, secrets: dict[str, SecretStr], verify: Any = True) -> None:
        self.options = options
        self._secrets = secrets
        self._verify = verify
        self._token: SecretStr | None = None
        self._use_until = 0.0  # time.time() after which the cached token is not used
        self.fetched = 0  # tokens fetched by this process (for tests and logs)

    def __repr__(self) -> str:
        return f"TokenSource(provider={self.options.provider!r}, token_url={self.options.url!r})"

    def _secret(self, ref: Any) -> str | None:
        return None if ref is None else self._secrets[ref.secret].get_secret_value()

    async def token(self) -> SecretStr:
        """A token valid for at least the margin; fetched when the cached one is too old.

        Raises:
            AuthenticationError: the endpoint refused (the error code and the fix, e.g.
                ``invalid_grant``), or could not be reached.
        """
        if self._token is not None and time.time() < self._use_until:
            return self._token
        try:
            from authlib.deprecate import AuthlibDeprecationWarning  # sets its own "always" filter first

            with warnings.catch_warnings():
                # authlib 1.9 nudges towards httpx2 at import; its httpx client, used here, works.
                warnings.filterwarnings("ignore", category=AuthlibDeprecationWarning)
                from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
        except ImportError:
            raise ConfigError("the connection authenticates with OAuth2, and authlib/httpx are not installed: "
                              "pip install 'mailgem[oauth2]'") from None

        opts = self.options
        verify = ssl.create_default_context(cafile=self._verify) if isinstance(self._verify, str) else self._verify
        client = AsyncOAuth2Client(client_id=opts.client_id, client_secret=self._secret(opts.client_secret),
                                   scope=opts.scopes, verify=verify, timeout=30)
        try:
            if opts.grant == "refresh_token":
                token = await client.refresh_token(opts.url, refresh_token=self._secret(opts.refresh_token))
            else:
                token = await client.fetch_token(opts.url, grant_type="client_credentials")
        except OAuthError as exc:
            raise AuthenticationError(_token_refusal(opts, exc.error, exc.description), transient=False,
                                      hint=OAUTH_HINT) from None
        except Exception as exc:  # noqa: BLE001 - httpx's connection and TLS errors, in words
            raise AuthenticationError(f"could not get an OAuth2 token from {opts.url}: {type(exc).__name__}: "
                                      f"{redact(str(exc), *(v.get_secret_value() for v in self._secrets.values()))}", transient=True,
                                      hint="check auth.token_url and that this machine reaches it") from None
        finally:
            await client.aclose()
        lifetime = float(token.get("expires_in") or 3600)
        self._token = SecretStr(token["access_token"])
        self._use_until = time.time() + lifetime - min(REFRESH_MARGIN_S, lifetime / 10)
        self.fetched += 1
        log.info("OAuth2 token from %s (%s grant), valid for %.0f s", opts.url, opts.grant, lifetime)
        return self._token

    def forget(self) -> None:
        """Drop the cached token (the server refused it: the next session fetches a new one)."""
        self._token = None


def _token_refusal(opts: OAuth2Options, error: str | None, description: str | None) -> str:
    said = f"{error or 'error'}" + (f" ({description})" if description else "")
    fixes = {
        "invalid_grant": ("the refresh token was revoked or has expired (Google expires those of apps in 'Testing' "
                          "after 7 days); get a new one with the user's consent and store it in the secret "
                          f"{opts.refresh_token.secret if opts.refresh_token else 'auth.refresh_token'}"),
        "invalid_client": ("the client ID or client secret is wrong, or the secret has expired; check auth.client_id "
                           "and the secret auth.client_secret names"),
        "unauthorized_client": "this client may not use this grant; check the app registration",
        "invalid_scope": f"the scope {opts.scopes!r} is not valid for this app; check auth.scope",
    }
    fix = fixes.get(error or "", "check the auth settings against the provider's app registration")
    return f"the token endpoint {opts.url} refused: {said}: {fix}"


def explain_refusal(options: OAuth2Options, code: int, message: str, challenge: str | None) -> str:
    """What a refused ``AUTH XOAUTH2`` means, with the fix.

    ``challenge``: the base64 text of the server's ``334`` reply before its final one, if any
    (Google puts ``{"status": "401", "schemes": "Bearer", "scope": "..."}`` there).
    """
    details = ""
    if challenge:
        try:
            info = json.loads(base64.b64decode(challenge))
        except (ValueError, TypeError):
            info = None
        if isinstance(info, dict):
            details = f" (status {info.get('status')}"
            details += f", scope needed: {info['scope']})" if info.get("scope") else ")"
            if str(info.get("status")) in ("400", "401"):
                return (f"the server refused the OAuth2 token{details}: it is expired, revoked, or lacks the scope "
                        f"the server needs; auth.scope is {options.scopes!r}")
    lowered = message.lower()
    if "5.7.139" in message or "smtpclientauthentication" in lowered or "smtp auth" in lowered and "disabled" in lowered:
        return ("SMTP AUTH is disabled for this mailbox or tenant: enable authenticated SMTP for the mailbox "
                "(Exchange Online PowerShell: Set-CASMailbox -Identity MAILBOX -SmtpClientAuthenticationDisabled $false)")
    if options.provider == "office365":
        return (f"the server refused the OAuth2 token ({code} {message}): the app needs the SMTP.SendAsApp "
                "permission with admin consent, a service principal in Exchange, and access to this mailbox "
                "(Add-MailboxPermission), and username must be that mailbox")
    return f"the server refused the OAuth2 token ({code} {message}){details}; check auth.scope and the account"


async def authenticate(client: Any, username: str, tokens: TokenSource) -> None:
    """``AUTH XOAUTH2`` with a token from ``tokens`` on aiosmtplib ``client``; one attempt.

    Raises:
        AuthenticationError: refused (the message says why and how to fix it).
    """
    from aiosmtplib.auth import auth_xoauth2_encode

    token = await tokens.token()
    # aiosmtplib's auth_xoauth2 answers the 334 challenge but drops its text, which holds the
    # reason (Google's JSON); the same two commands here keep it.
    response = await client.execute_command(b"AUTH", b"XOAUTH2", auth_xoauth2_encode(username, token.get_secret_value()))
    challenge = None
    if response.code == 334:
        challenge = response.message
        response = await client.execute_command(b"")
    if response.code != 235:
        tokens.forget()
        raise AuthenticationError(explain_refusal(tokens.options, response.code, response.message, challenge),
                                  code=response.code, server_message=response.message, transient=False,
                                  hint=OAUTH_HINT)


OAUTH_HINT = "OAuth2 (auth: type oauth2): see the README's Microsoft 365 and Gmail examples"
