"""What one run learnt of one connection's server, shared by every session of it.

* A permanent refusal (rejected credentials, an untrusted certificate, the wrong security mode
  for the port, a refused sender) is remembered: no other session asks the server again.
  Providers lock accounts after repeated failed logins.
* Whether a session opened once in this process (so a later refusal to connect is an outage,
  not a wrong host) and whether the server accepted the sender (no other session need check).
* Which warnings were given (each once a run).

Pickled with the transport to Spark workers: what was refused or verified travels; whether the
server was reached does not (a worker's network is its own).
"""

from __future__ import annotations

import logging
from typing import Any

from .errors import SmtpError

__all__ = ["ServerMemory"]

log = logging.getLogger("mailgem.connections")


class ServerMemory:
    """One connection's memory for a run (see the module docstring); ``name`` is the connection's."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.refusal: SmtpError | None = None  # the first permanent refusal of this run
        self.reached = False
        self.sender_verified = False
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"ServerMemory({self.name!r}, refused={self.refusal is not None}, reached={self.reached})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["reached"] = False  # a worker's network is its own: it reaches the server itself first
        return state

    def warn_once(self, topic: str, message: str) -> None:
        """Log ``message`` as a warning the first time ``topic`` comes up for this connection."""
        if topic not in self._warned:
            self._warned.add(topic)
            log.warning("%s", message)

    def remember_refusal(self, error: SmtpError) -> None:
        """Keep the first permanent refusal: later sessions raise it without asking the server."""
        if not error.transient and self.refusal is None:
            self.refusal = error
            log.warning("connection %s: %s; not asking the server again in this run", self.name, error.message)

    def raise_if_refused(self, *, opening: bool = False) -> None:
        """Raise a new error like the remembered permanent refusal, if any (``opening``: as raised
        while a session opened, see :attr:`SmtpError.during_open`).

        Raises:
            SmtpError: the remembered refusal's kind, code and text.
        """
        if self.refusal is not None:
            # A copy: the remembered one stays as it was built.
            raise self.refusal.replace(during_open=True if opening else None)
