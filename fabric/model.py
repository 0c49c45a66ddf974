"""The fabric: a team's execution environment (teams, secret store, SMTP connections)."""

from __future__ import annotations

import getpass
import logging
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator

from mailgem.connections.model import SmtpConnection
from mailgem.connections.oauth2 import TokenSource
from mailgem.connections.transport import SmtpTransport

from .errors import AccessDeniedError, FabricConfigError
from .secrets import SecretStore
from .stores import EnvStoreConfig, StoreConfig

__all__ = ["Fabric", "Team", "current_user"]

log = logging.getLogger("mailgem.fabric")

_FROZEN = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


def current_user() -> str:
    """The user running mailgem: ``MAILGEM_USER`` if set, else the operating-system login."""
    return os.environ.get("MAILGEM_USER") or getpass.getuser()


class Team(BaseModel):
    """A team the fabric is assigned to, with its members (user names)."""

    model_config = _FROZEN
    name: str = Field(min_length=1)
    members: list[str] = Field(default_factory=list)


class Fabric(BaseModel):
    """A fabric as loaded from YAML (see :func:`mailgem.fabric.loader.load_fabric`).

    Everyone in one of ``teams`` may use every connection, with the same stored credentials;
    anyone else gets :class:`AccessDeniedError`.
    """

    model_config = _FROZEN
    name: str = Field(min_length=1)
    teams: list[Team] = Field(min_length=1)
    secrets: StoreConfig = Field(default_factory=EnvStoreConfig)
    connections: list[SmtpConnection] = Field(default_factory=list)

    _store: SecretStore | None = PrivateAttr(default=None)
    _built: SecretStore | None = PrivateAttr(default=None)  # the configured store, once built when it keeps values
    _source: Path | None = PrivateAttr(default=None)  # the YAML file, for hints (--fabric PATH)

    def with_store(self, store: SecretStore) -> Fabric:
        """Use ``store`` instead of the configured one (embedded fabric, Python-built fabrics)."""
        self._store = store
        return self

    @field_validator("connections")
    @classmethod
    def _unique_names(cls, connections: list[SmtpConnection]) -> list[SmtpConnection]:
        # A field validator, so the error is reported at ``connections``.
        names = [c.name for c in connections]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"connection names must be unique; repeated: {', '.join(duplicates)}")
        return connections

    def store(self) -> SecretStore:
        """The fabric's secret store.

        A store that keeps the values it read (``keeps_values``: every store that asks a service
        or a command) is built once per fabric object, so a run's checks, connections, fallbacks
        and ledger read each secret once.
        """
        if self._store is not None:
            return self._store
        if self._built is not None:
            return self._built
        store = self.secrets.build(self._source)
        if store.keeps_values:
            self._built = store
        return store

    def destination(self, name: str) -> str:
        """Where connection ``name`` delivers, as the send ledger keys it:
        ``fabric/connection host:port as sender``.

        Raises:
            FabricConfigError: no such connection.
        """
        conn = self.connection(name)
        return f"{self.name}/{conn.name} {conn.host}:{conn.port} as {conn.sender}"

    def check_access(self, user: str) -> Team:
        """Return the first team of ``user``.

        Raises:
            AccessDeniedError: ``user`` is in none of the fabric's teams.
        """
        for team in self.teams:
            if user in team.members:
                return team
        raise AccessDeniedError(
            f"user {user!r} may not use fabric {self.name!r}: not a member of its teams "
            f"({', '.join(t.name for t in self.teams)}); ask the fabric's owner to add you to one")

    def connection(self, name: str) -> SmtpConnection:
        """The connection called ``name``.

        Raises:
            FabricConfigError: no such connection (the message lists those that exist).
        """
        for conn in self.connections:
            if conn.name == name:
                return conn
        known = ", ".join(c.name for c in self.connections) or "none"
        raise FabricConfigError(f"fabric {self.name!r} has no connection {name!r} (it has: {known})")

    def secret(self, name: str, user: str | None = None) -> SecretStr:
        """The secret ``name`` from the fabric's store, for ``user`` (default: :func:`current_user`),
        e.g. a PostgreSQL ledger's password. Checks access first.

        Raises:
            AccessDeniedError, SecretNotFoundError, SecretStoreError.
        """
        self.check_access(user or current_user())
        return self.store().get(name)

    def special_domains(self, name: str) -> tuple[str, ...]:
        """Connection ``name``'s ``allowed_special_domains``; none when there is no such
        connection (that is reported where the connection is resolved)."""
        try:
            return self.connection(name).allowed_special_domains
        except FabricConfigError:
            return ()

    def transport(self, name: str, user: str | None = None) -> SmtpTransport:
        """An :class:`SmtpTransport` for connection ``name``, used by ``user`` (default: :func:`current_user`).

        Checks access first, then resolves the password secret from the fabric's store.

        Raises:
            AccessDeniedError, FabricConfigError, SecretNotFoundError, SecretStoreError.
        """
        self.check_access(user or current_user())  # before the store is built: access comes first
        return self._transport(name, user, self.store())

    def _transport(self, name: str, user: str | None, store: SecretStore) -> SmtpTransport:
        user = user or current_user()
        team = self.check_access(user)
        conn = self.connection(name)
        password = store.get(conn.password.secret) if conn.password is not None else None
        dkim_key = store.get(conn.dkim.private_key.secret) if conn.dkim is not None else None
        proxy = conn.proxy
        proxy_password = store.get(proxy.password.secret) if proxy is not None and proxy.password else None
        tokens = None
        if conn.auth is not None:
            tokens = TokenSource(conn.auth, {n: store.get(n) for n in conn.auth.secrets()},
                                 verify=str(conn.auth.ca_bundle) if conn.auth.ca_bundle else True)
        log.info("user %s (team %s) uses connection %s of fabric %s", user, team.name, name, self.name)
        return SmtpTransport(conn, password, dkim_key=dkim_key, proxy_password=proxy_password, tokens=tokens)

    def transports(self, name: str, user: str | None = None) -> list[SmtpTransport]:
        """The transport of connection ``name`` followed by its fallback chain (``fallback:``).

        Raises:
            FabricConfigError: a fallback names a missing connection, or the chain loops.
            AccessDeniedError, SecretNotFoundError, SecretStoreError: as :meth:`transport`.
        """
        self.check_access(user or current_user())
        store = self.store()  # one store for the chain: a remote store reads each secret once
        chain = [self._transport(name, user, store)]
        seen = {name}
        fallback = chain[0].connection.fallback
        while fallback is not None:
            if fallback in seen:
                raise FabricConfigError(f"fallback connections of {name!r} form a loop at {fallback!r}")
            seen.add(fallback)
            chain.append(self._transport(fallback, user, store))
            fallback = chain[-1].connection.fallback
        return chain
