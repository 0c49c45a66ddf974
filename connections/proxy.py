"""Reaching the SMTP server through a SOCKS5 or HTTP CONNECT proxy.

``proxy: socks5://[user@]host:port`` or ``proxy: http://[user@]host:port`` (a string), or
``proxy: {url: ..., password: {secret: NAME}}`` when the proxy wants a password (never in the
URL). python-socks opens the tunnel (SOCKS5, RFC 1928/1929; HTTP CONNECT, RFC 9110 §9.3.6) and
hands aiosmtplib the connected socket; TLS, implicit or by STARTTLS, still runs end to end with
the SMTP server and is verified against the connection's host name, so the proxy sees only
ciphertext. The SMTP server's name is resolved by the proxy (as ``socks5h`` does), which is
what a network that allows mail only through its proxy needs.

SOCKS5 goes through python-socks. HTTP CONNECT does not: python-socks reads the proxy's reply
with one ``recv`` and drops whatever came after it, and an SMTP server speaks first, so its
greeting can arrive in that same read and be lost (seen with pproxy). The CONNECT exchange is
done here instead, reading exactly the reply's header, byte by byte (once per session).
"""

from __future__ import annotations

import asyncio
import base64
import socket
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from .errors import SmtpConnectError, SmtpTimeoutError, Where, redact
from .secretref import SecretRef

__all__ = ["ProxyOptions", "open_tunnel"]

_SCHEMES = {"socks5": "socks5", "socks5h": "socks5", "http": "http"}


class ProxyOptions(BaseModel):
    """A connection's proxy: ``url`` (``socks5://[user@]host:port`` or ``http://[user@]host:port``)
    and, when it needs one, the secret holding its password."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)
    url: str = Field(description="socks5://[user@]host:port or http://[user@]host:port (HTTP CONNECT); no password.")
    password: SecretRef | None = Field(default=None, description="Secret holding the proxy user's password: {secret: NAME}.")

    @model_validator(mode="before")
    @classmethod
    def _from_url(cls, data: Any) -> Any:
        return {"url": data} if isinstance(data, str) else data


    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in _SCHEMES:
            raise ValueError(f"proxy must start with socks5:// or http:// (got {parts.scheme or 'no'} scheme)")
        if parts.password is not None:
            raise ValueError("the proxy URL contains a password: remove it and name the secret holding it in "
                             "proxy.password ({secret: NAME})")
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise ValueError("proxy needs a host and a port: socks5://host:1080 or http://host:3128")
        return value

    @property
    def kind(self) -> Literal["socks5", "http"]:
        return _SCHEMES[urlsplit(self.url).scheme]  # type: ignore[return-value]

    @property
    def address(self) -> str:
        """``kind://host:port``, for messages (no user, no password)."""
        parts = urlsplit(self.url)
        return f"{self.kind}://{parts.hostname}:{parts.port}"


async def open_tunnel(proxy: ProxyOptions, password: SecretStr | None, host: str, port: int,
                      timeout: float) -> socket.socket:
    """A socket connected to ``host:port`` through ``proxy`` (seconds: ``timeout``).

    Raises:
        SmtpConnectError: the proxy cannot be reached, refuses the tunnel or the credentials
            (the message names the proxy, never the password).
        SmtpTimeoutError: the proxy did not answer in time.
    """
    from python_socks import ProxyError, ProxyType
    from python_socks.async_.asyncio import Proxy

    parts = urlsplit(proxy.url)
    secret = password.get_secret_value() if password is not None else None
    where: Where = {"host": host, "port": port}
    try:
        if proxy.kind == "http":
            return await asyncio.wait_for(_http_connect(proxy, secret, host, port), timeout)
        tunnel = Proxy(ProxyType.SOCKS5, str(parts.hostname), int(parts.port or 0), username=parts.username,
                       password=secret, rdns=True)
        return await tunnel.connect(dest_host=host, dest_port=port, timeout=timeout)
    except SmtpConnectError:
        raise  # the HTTP proxy's own refusal, already in words
    except TimeoutError:  # ProxyTimeoutError included
        raise SmtpTimeoutError(f"the proxy {proxy.address} did not answer within {timeout:g} s",
                               hint="check that the proxy runs and is reachable from here", **where) from None
    except OSError as exc:  # ProxyConnectionError included
        raise SmtpConnectError(f"cannot reach the proxy {proxy.address}: {redact(str(exc), secret)}",
                               hint="check proxy: its host and port, and that it runs", **where) from None
    except ProxyError as exc:
        raise SmtpConnectError(
            f"the proxy {proxy.address} refused the tunnel to {host}:{port}: {redact(str(exc), secret)}",
            hint="check the proxy's user and password (proxy.password), and that it allows connections to this "
                 "host and port", **where) from None


async def _http_connect(proxy: ProxyOptions, secret: str | None, host: str, port: int) -> socket.socket:
    """``CONNECT host:port`` (RFC 9110 §9.3.6) through an HTTP proxy; the socket, positioned
    right after the reply's header."""
    loop = asyncio.get_running_loop()
    parts = urlsplit(proxy.url)
    infos = await loop.getaddrinfo(parts.hostname, parts.port, type=socket.SOCK_STREAM)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, address)
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
        if parts.username is not None:
            credentials = base64.b64encode(f"{parts.username}:{secret or ''}".encode()).decode()
            lines.append(f"Proxy-Authorization: Basic {credentials}")  # RFC 7617
        await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
        header = b""
        while not header.endswith(b"\r\n\r\n"):  # bounded: a reply header is short
            byte = await loop.sock_recv(sock, 1)
            if not byte or len(header) > 16384:
                raise OSError("the proxy closed the connection, or sent no HTTP reply")
            header += byte
        status = header.split(b"\r\n", 1)[0].decode("latin-1")
        code = status.split(" ", 2)[1] if status.startswith("HTTP/") and " " in status else ""
        if code != "200":
            hint = ("check the proxy's user and password (proxy.password)" if code == "407" else
                    "check that the proxy allows CONNECT to this host and port")
            raise SmtpConnectError(f"the proxy {proxy.address} refused the tunnel to {host}:{port}: {status}",
                                   hint=hint, host=host, port=port)
        return sock
    except BaseException:
        sock.close()
        raise
