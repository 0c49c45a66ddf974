"""Who may use the dialogs: a token, a cookie, CSRF protection and a host check.

As Jupyter does, ``mailgem ui`` prints a URL with a token. Opening it sets a cookie (HttpOnly,
SameSite=Strict) and redirects to the same page without the token, so it stays out of the
browser's history; every later request carries the cookie. A request with neither gets 403.

The page's ``fetch`` calls carry a CSRF token (the ``X-CSRF-Token`` header, from the page's
``<meta name="csrf-token">``), derived from the access token, checked on every state-changing
request (and, as a query parameter, on the connection test's event stream); a request from
another origin is refused, and a ``Host`` header naming another server (DNS rebinding) too.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["COOKIE", "CSRF_HEADER", "Guard", "derive"]

COOKIE = "mailgem_ui"
CSRF_HEADER = "x-csrf-token"
_SAFE = {"GET", "HEAD", "OPTIONS"}
# Our own scripts only; the previewed email (an iframe without scripts, `sandbox`) may use inline
# styles and data: images, as mail clients allow; nothing is fetched from elsewhere.
_HEADERS = [(k.encode(), v.encode()) for k, v in {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "cache-control": "no-store",
}.items()]
DENIED = ("403 Forbidden: open the URL `mailgem ui` printed (it carries the access token), "
          "or pass --token to choose one")


def derive(token: str, purpose: str) -> str:
    """A value derived from the access token for one ``purpose`` (``session``, ``csrf``): the
    cookie and the CSRF token never hold the token itself."""
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).hexdigest()


class Guard:
    """ASGI middleware in front of the whole app (static files included).

    Args:
        app: the application.
        token: the access token (never logged; only its derivations leave this object).
        hosts: the ``Host`` header values the server answers to (``127.0.0.1:8765``, ``localhost:8765``).
    """

    def __init__(self, app: ASGIApp, token: str, hosts: Iterable[str]) -> None:
        self.app = app
        self._token = token
        self._session = derive(token, "session")
        self.csrf = derive(token, "csrf")
        self._hosts = {h.lower() for h in hosts}
        self._origins = {f"http://{h}" for h in self._hosts}

    def __repr__(self) -> str:
        return f"Guard(hosts={sorted(self._hosts)})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response = self._refusal(scope)
        if response is not None:
            await response(scope, receive, send)
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        given = query.get("token")
        if given is not None and scope["method"] == "GET" and hmac.compare_digest(given, self._token):
            # The token's one use: trade it for the cookie and drop it from the address bar.
            rest = urlencode([(k, v) for k, v in parse_qsl(scope["query_string"].decode("latin-1")) if k != "token"])
            redirect = RedirectResponse(scope["path"] + (f"?{rest}" if rest else ""), status_code=303)
            redirect.set_cookie(COOKIE, self._session, httponly=True, samesite="strict", path="/")
            await redirect(scope, receive, send)
            return
        scope.setdefault("state", {})["csrf"] = self.csrf

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope) -> Response | None:
        headers = Headers(scope=scope)
        if headers.get("host", "").lower() not in self._hosts:
            return PlainTextResponse("403 Forbidden: unknown Host header (mailgem ui answers only to the address it "
                                     "printed)", status_code=403)
        origin = headers.get("origin")
        if origin is not None and origin.lower() not in self._origins:
            return PlainTextResponse("403 Forbidden: a request from another site", status_code=403)
        cookie = _cookie(headers.get("cookie", ""), COOKIE)
        token = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))).get("token")
        signed_in = cookie is not None and hmac.compare_digest(cookie, self._session)
        if not signed_in and not (token is not None and hmac.compare_digest(token, self._token)):
            return PlainTextResponse(DENIED, status_code=403)
        if scope["method"] not in _SAFE:
            csrf = headers.get(CSRF_HEADER)
            if csrf is None or not hmac.compare_digest(csrf, self.csrf):
                return PlainTextResponse("403 Forbidden: missing or wrong CSRF token; reload the page", status_code=403)
        return None


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None
