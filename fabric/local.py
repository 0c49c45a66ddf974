"""The embedded local fabric: a real SMTP server on 127.0.0.1, so a newcomer sees real mail.

The server (aiosmtpd) requires STARTTLS and AUTH, with a certificate from a throwaway CA that
the connection trusts (verification stays on) and development credentials made up for this run;
every received message is written to the outbox folder as an ``.eml`` file.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import PrivateAttr, SecretStr

from mailgem.connections.local_server import LocalSmtpServer
from mailgem.connections.model import SmtpConnection

from .loader import LOCAL_CONNECTION
from .model import Fabric, Team, current_user
from .secrets import MemorySecretStore

__all__ = ["LocalFabric", "EmbeddedFabric", "local_fabric", "local_identity_fabric", "LOCAL_CONNECTION", "LOCAL_SENDER"]

LOCAL_SENDER = "mailgem-dev@example.com"


class EmbeddedFabric(Fabric):
    """The embedded fabric. Its server listens on a new port every run, so a destination names
    the outbox folder instead: re-running a job on it is a re-run to the same place."""

    _outbox: Path | None = PrivateAttr(default=None)

    def destination(self, name: str) -> str:
        conn = self.connection(name)
        return f"{self.name}/{conn.name} embedded server, outbox {self._outbox} as {conn.sender}"


@dataclass
class LocalFabric:
    """A running embedded fabric: ``fabric`` (one connection, ``local``) and its ``server``."""

    fabric: Fabric
    server: LocalSmtpServer
    outbox: Path


@contextlib.contextmanager
def local_fabric(outbox: str | Path = "outbox", user: str | None = None) -> Iterator[LocalFabric]:
    """Start the embedded SMTP server and yield a fabric whose ``local`` connection reaches it.

    Args:
        outbox: folder for received ``.eml`` files (created if needed).
        user: the member of the fabric's one team (default: :func:`current_user`).
    """
    outbox = Path(outbox)
    password = secrets.token_urlsafe(24)  # development credential, valid for this run only
    server = LocalSmtpServer(security="starttls", users={LOCAL_SENDER: password}, outbox=outbox)
    with server:
        fabric = _embedded(_local_connection(server.host, server.port, server.ca_pem), user, outbox)
        fabric.with_store(MemorySecretStore({_LOGIN_SECRET: SecretStr(password)}))
        yield LocalFabric(fabric, server, outbox)


def local_identity_fabric(user: str | None = None, outbox: str | Path = "outbox") -> Fabric:
    """The embedded fabric without its server: its ``local`` connection's identity (From, the
    envelope sender, the Message-ID domain) for previews and dry runs, which read no secret and
    open no session. Nothing can be sent through it: it has no server, and its secret store is
    empty (:meth:`Fabric.transport` raises ``SecretNotFoundError``).

    Args:
        user: the member of the fabric's one team (default: :func:`current_user`).
        outbox: the folder its destination names (as :func:`local_fabric`'s would).
    """
    fabric = _embedded(_local_connection("127.0.0.1", 587, None), user, Path(outbox))
    return fabric.with_store(MemorySecretStore({}))


_LOGIN_SECRET = "local-smtp-password"  # the name the embedded server's login is stored under


def _local_connection(host: str, port: int, ca_pem: Path | None) -> SmtpConnection:
    return SmtpConnection(
        name=LOCAL_CONNECTION, host=host, port=port, security="starttls", ca_bundle=ca_pem, username=LOCAL_SENDER,
        password={"secret": _LOGIN_SECRET}, sender_name="mailgem (local)", timeout_s=30,
    )


def _embedded(connection: SmtpConnection, user: str | None, outbox: Path) -> EmbeddedFabric:
    fabric = EmbeddedFabric(name="local", teams=[Team(name="local", members=[user or current_user()])],
                            connections=[connection])
    fabric._outbox = outbox.resolve()
    return fabric
