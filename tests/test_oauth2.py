"""OAuth2 (SASL XOAUTH2) against a local HTTPS token endpoint and an aiosmtpd server that checks
the tokens it issued: both grants, caching, refresh of short-lived tokens during a run, refusals
from the endpoint and from the SMTP server in words, and tokens never shown."""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
import trustme
from conftest import PER_ROW, USER
from pydantic import SecretStr

from mailgem.connections import AuthenticationError, SmtpConnection
from fault_server import FaultServer
from mailgem.connections.sync import run_sync
from mailgem.fabric import Fabric, MemorySecretStore, Team
from mailgem.gems.email import EmailGem

MAILBOX = "reports@example.com"
CLIENT_SECRET = "cl1ent-s3cret-test-only"
REFRESH_TOKEN = "1//refresh-test-only-77"


class TokenEndpoint:
    """An HTTPS OAuth2 token endpoint on 127.0.0.1 (trustme certificate): the refresh token and
    client credentials grants (client authentication by HTTP Basic or in the form), tokens that
    live ``lifetime_s``; ``refuse`` makes it answer ``{"error": refuse}``."""

    def __init__(self, tmp_path, lifetime_s: float = 3600) -> None:
        self.lifetime_s = lifetime_s
        self.refuse: str | None = None
        self.issued: dict[str, float] = {}  # token -> expiry (time.time())
        self.requests: list[dict[str, str]] = []
        ca = trustme.CA()
        self.ca_pem = str(tmp_path / "token-ca.pem")
        ca.cert_pem.write_to_path(self.ca_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1").configure_cert(ctx)
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                form = dict(urllib.parse.parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode()))
                basic = self.headers.get("Authorization", "")
                if basic.startswith("Basic "):
                    import base64

                    user, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
                    form |= {"client_id": urllib.parse.unquote(user), "client_secret": urllib.parse.unquote(secret)}
                endpoint.requests.append(form)
                if endpoint.refuse:
                    return self._reply(400, {"error": endpoint.refuse, "error_description": "refused by the test"})
                if form.get("client_id") != "app-1":
                    return self._reply(401, {"error": "invalid_client"})
                grant = form.get("grant_type")
                if grant == "refresh_token" and form.get("refresh_token") != REFRESH_TOKEN:
                    return self._reply(400, {"error": "invalid_grant"})
                if grant == "client_credentials" and form.get("client_secret") != CLIENT_SECRET:
                    return self._reply(401, {"error": "invalid_client"})
                token = f"at-{len(endpoint.issued)}-{time.time_ns()}"
                endpoint.issued[token] = time.time() + endpoint.lifetime_s
                self._reply(200, {"access_token": token, "token_type": "Bearer", "expires_in": endpoint.lifetime_s})

            def _reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/token"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def valid(self, user: str, token: str) -> bool:
        return user == MAILBOX and self.issued.get(token, 0) > time.time()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def endpoint(tmp_path):
    server = TokenEndpoint(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def oauth_server(endpoint):
    with FaultServer(security="starttls", users={}, oauth=endpoint.valid) as server:
        yield server


def _fabric(server: FaultServer, endpoint: TokenEndpoint, auth: dict, **conn) -> Fabric:
    connection = SmtpConnection(name="reports", host=server.host, port=server.port, security="starttls",
                                ca_bundle=server.ca_pem, username=MAILBOX, timeout_s=10,
                                auth={"type": "oauth2", "token_url": endpoint.url, "ca_bundle": endpoint.ca_pem,
                                      "client_id": "app-1"} | auth, **conn)
    fab = Fabric(name="f", teams=[Team(name="t", members=[USER])], connections=[connection])
    return fab.with_store(MemorySecretStore({"client-secret": SecretStr(CLIENT_SECRET),
                                             "refresh-token": SecretStr(REFRESH_TOKEN)}))


OFFICE365 = {"provider": "office365", "tenant": "contoso.onmicrosoft.com", "client_secret": {"secret": "client-secret"}}
GOOGLE = {"provider": "google", "refresh_token": {"secret": "refresh-token"}, "client_secret": {"secret": "client-secret"}}


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"n": range(n), "to": [f"u{i}@example.com" for i in range(n)]})


@pytest.mark.parametrize("auth", [OFFICE365, GOOGLE], ids=["client_credentials", "refresh_token"])
def test_messages_go_out_with_a_token_from_the_endpoint(oauth_server, endpoint, auth):
    report = EmailGem(PER_ROW, _fabric(oauth_server, endpoint, auth, pool_size=2), user=USER).apply(None, _frame(6))
    assert list(report["status"]) == ["sent"] * 6
    assert all(m.login == MAILBOX and m.tls for m in oauth_server.wait_for_messages(6))
    assert {a.mechanism for a in oauth_server.auth_attempts} == {"XOAUTH2"}
    assert all(a.success for a in oauth_server.auth_attempts)
    grant = "client_credentials" if auth is OFFICE365 else "refresh_token"
    assert [r["grant_type"] for r in endpoint.requests] == [grant]  # one token, cached for every session
    assert endpoint.requests[0]["scope"] == ("https://outlook.office365.com/.default" if auth is OFFICE365
                                             else "https://mail.google.com/")
    report = run_sync(_fabric(oauth_server, endpoint, auth).transport("reports", USER).check())
    assert report.ok and f"option      auth: oauth2 ({auth['provider']}, {grant} grant) from {endpoint.url}" in \
        "\n".join(report.lines())
    assert "auth        " in "\n".join(report.lines()) and "XOAUTH2" in "\n".join(report.lines())


def test_a_short_lived_token_is_fetched_again_during_a_long_run(oauth_server, endpoint):
    endpoint.lifetime_s = 2  # used until a tenth of its life before expiry
    fab = _fabric(oauth_server, endpoint, GOOGLE, pool_size=1, max_messages_per_connection=1)
    oauth_server.data_script = [0.5] * 8  # each message takes half a second: the run outlives tokens
    report = EmailGem(PER_ROW, fab, user=USER).apply(None, _frame(8))
    assert list(report["status"]) == ["sent"] * 8
    assert len(endpoint.requests) >= 2 and all(a.success for a in oauth_server.auth_attempts)
    assert len(oauth_server.auth_attempts) == 8  # a new session per message, each with a valid token


def test_the_endpoint_refusing_says_what_to_do(oauth_server, endpoint, caplog):
    endpoint.refuse = "invalid_grant"
    fab = _fabric(oauth_server, endpoint, GOOGLE)
    with pytest.raises(AuthenticationError) as info:
        run_sync(_open(fab))
    message = str(info.value)
    assert f"the token endpoint {endpoint.url} refused: invalid_grant" in message
    assert "get a new one with the user's consent" in message and "refresh-token" in message
    assert oauth_server.auth_attempts == [] and oauth_server.sessions_opened <= 1
    for text in (message, repr(info.value), caplog.text):
        assert REFRESH_TOKEN not in text and CLIENT_SECRET not in text


def test_a_token_the_server_refuses_is_explained_from_its_json_challenge(oauth_server, endpoint, caplog):
    oauth_server.oauth = lambda user, token: False  # e.g. the wrong scope
    fab = _fabric(oauth_server, endpoint, GOOGLE)
    report = EmailGem(PER_ROW | {"on_error": "continue"}, fab, user=USER).apply(None, _frame(3))
    assert set(report["status"]) == {"failed"}
    error = report.iloc[0].error
    assert "refused the OAuth2 token (status 401, scope needed: https://mail.google.com/)" in error
    assert len(oauth_server.auth_attempts) == 1  # one attempt, remembered for the rest of the run
    tokens = list(endpoint.issued)
    assert tokens and all(t not in caplog.text + error for t in tokens)


def test_smtp_auth_disabled_for_the_mailbox_is_named(oauth_server, endpoint):
    oauth_server.oauth = lambda user, token: False
    oauth_server.oauth_refusal = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant."
    fab = _fabric(oauth_server, endpoint, OFFICE365)
    with pytest.raises(AuthenticationError, match="SMTP AUTH is disabled for this mailbox or tenant") as info:
        run_sync(_open(fab))
    assert "SmtpClientAuthenticationDisabled" in str(info.value)


def test_oauth2_settings_are_checked():
    base = {"name": "r", "host": "smtp.office365.com", "port": 587, "username": MAILBOX}
    with pytest.raises(ValueError, match="office365 needs tenant"):
        SmtpConnection(**base, auth={"type": "oauth2", "provider": "office365", "client_id": "a",
                                     "client_secret": {"secret": "s"}})
    with pytest.raises(ValueError, match="google needs refresh_token"):
        SmtpConnection(**base, auth={"type": "oauth2", "provider": "google", "client_id": "a"})
    with pytest.raises(ValueError, match="token_url must be https://"):
        SmtpConnection(**base, auth={"type": "oauth2", "token_url": "http://idp/token", "scope": "x", "client_id": "a"})
    with pytest.raises(ValueError, match="password or auth"):
        SmtpConnection(**base, password={"secret": "p"}, auth={"type": "oauth2", "provider": "google",
                                                                "client_id": "a", "refresh_token": {"secret": "r"}})


async def _open(fab):
    async with fab.transport("reports", USER).connect():
        pass
