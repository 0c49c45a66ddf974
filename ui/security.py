"""Who may use the dialogs: a token, a cookie, CSRF protection and a host check.

As Jupyter does, ``mailgem ui`` prints a URL with a token. Opening it sets a cookie (HttpOnly,
SameSite=Strict, named after the port, since browsers do not keep cookies apart by port) and
redirects to the same page without the token, so it stays out of the browser's history; every
later request carries the cookie. A request with neither gets 403. The cookie holds a value
derived from the token: anyone who can read it (another local server the browser visits on
127.0.0.1 receives cookies of every port, as for Jupyter) can use the dialogs until the token
changes, which it does at every start unless ``--token`` fixes it.

The page's ``fetch`` calls carry a CSRF token (the ``X-CSRF-Token`` header, from the page's
``<meta name="csrf-token">``), derived from the access token, checked on every state-changing
request; a request from another origin is refused, and a ``Host`` header naming another server
(DNS rebinding) too, unless the server listens on every address (``--host 0.0.0.0``, which needs
a token), where the ``Origin`` must then match the ``Host``.

Unforeseen errors end as a one-line 500 (the terminal gets one log line; ``-v`` the trace), never
a trace in a page.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSRF_HEADER", "Guard", "cookie_name", "derive", "same"]

log = logging.getLogger("mailgem.ui")

CSRF_HEADER = "x-csrf-token"
_SAFE = {"GET", "HEAD", "OPTIONS"}
DENIED = ("403 Forbidden: open the URL `mailgem ui` printed (it carries the access token), "
          "or pass --token to choose one")
# Our own scripts only; the previewed email (an iframe without scripts, `sandbox`) may use inline
# styles and data: images, as mail clients allow; nothing is fetched from elsewhere.
_HEADERS = [(k.encode(), v.encode()) for k, v in {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "cache-control": "no-store",
}.items()]


def derive(token: str, purpose: str) -> str:
    """A value derived from the access token for one ``purpose`` (``session``, ``csrf``): the
    cookie and the CSRF token never hold the token itself."""
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def same(given: str | None, expected: str) -> bool:
    """``given == expected`` in constant time; any text (a non-ASCII value is simply wrong)."""
    return given is not None and hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def cookie_name(port: int) -> str:
    """The session cookie's name for the server on ``port`` (one per instance)."""
    return f"mailgem_ui_{port}"


class Guard:
    """ASGI middleware in front of the whole app (static files included).

    Args:
        app: the application.
        token: the access token (never logged; only its derivations leave this object).
        hosts: the ``Host`` header values the server answers to (``127.0.0.1:8765``,
            ``localhost:8765``); ``None`` when it listens on every address (any ``Host``, the
            ``Origin`` matching it).
        cookie: the session cookie's name (:func:`cookie_name`).
    """

    def __init__(self, app: ASGIApp, token: str, hosts: Iterable[str] | None, cookie: str) -> None:
        self.app = app
        self._token = token
        self._session = derive(token, "session")
        self.csrf = derive(token, "csrf")
        self._hosts = None if hosts is None else {h.lower() for h in hosts}
        self._cookie = cookie

    def __repr__(self) -> str:
        return f"Guard(hosts={sorted(self._hosts) if self._hosts is not None else 'any'})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response = self._refusal(scope)
        if response is not None:
            await response(scope, receive, send)
            return
        pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        given = dict(pairs).get("token")
        if given is not None and scope["method"] == "GET" and same(given, self._token):
            # The token's one use: trade it for the cookie and drop it from the address bar.
            rest = urlencode([(k, v) for k, v in pairs if k != "token"])
            redirect = RedirectResponse(scope["path"] + (f"?{rest}" if rest else ""), status_code=303)
            redirect.set_cookie(self._cookie, self._session, httponly=True, samesite="strict", path="/")
            await redirect(scope, receive, send)
            return
        scope.setdefault("state", {})["csrf"] = self.csrf
        await self._contained(scope, receive, send)

    async def _contained(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app, with our headers on every response and an unforeseen error as one line."""
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:  # noqa: BLE001 - the page gets one line, the terminal one log line
            log.error("mailgem ui: unexpected %s in %s %s: %s (-v shows the trace)", type(exc).__name__,
                      scope["method"], scope["path"], exc)
            log.debug("the trace", exc_info=True)
            if not started:
                await PlainTextResponse(f"500: unexpected {type(exc).__name__} (see the terminal running mailgem ui)",
                                        status_code=500)(scope, receive, send)

    def _refusal(self, scope: Scope) -> Response | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "").lower()
        if self._hosts is not None and host not in self._hosts:
            return PlainTextResponse("403 Forbidden: unknown Host header (mailgem ui answers only to the address it "
                                     "printed)", status_code=403)
        origin = headers.get("origin")
        allowed = {f"http://{h}" for h in self._hosts} if self._hosts is not None else {f"http://{host}"}
        if origin is not None and origin.lower() not in allowed:
            return PlainTextResponse("403 Forbidden: a request from another site", status_code=403)
        cookie = _cookie(headers.get("cookie", ""), self._cookie)
        token = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))).get("token")
        if not same(cookie, self._session) and not same(token, self._token):
            return PlainTextResponse(DENIED, status_code=403)
        if scope["method"] not in _SAFE and not same(headers.get(CSRF_HEADER), self.csrf):
            return PlainTextResponse("403 Forbidden: missing or wrong CSRF token; reload the page", status_code=403)
        return None


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None
