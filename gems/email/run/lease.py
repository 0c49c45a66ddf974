"""A run's lease in the send ledger (:mod:`.ledger`): listed in ``ledger_owners`` with an
``alive_until`` by the database's clock, renewed every ``lease_s / 3`` seconds from a thread.

**A lease that may have lapsed stops the run.** A process paused for longer than its lease
(stopped, a frozen container or VM, a machine asleep) or a ledger too slow to renew it may have
lost its claims to a re-run meanwhile. So a message starts only while the lease was renewed
less than ``0.8 × lease_s`` ago (:meth:`OwnerLease.lease_held`), a renewal extends only a
lease that has not run out by the database's clock, and an outcome is recorded only on a row
this run still owns. The lease is asked once more when the server is ready for a message's
content (the run's gate's ``may_write``, :mod:`mailgem.connections.gate`): a message
whose commands went out before the pause is not written after it. As with a killed run, a
message whose content was being written when the pause began (or, without PIPELINING, whose
``DATA`` was: the content follows the ``354`` inside aiosmtplib) may still finish, and one
accepted within ``OUTCOME_DELAY_S`` before it still reads ``sending``: a re-run sends those
again, with the same Message-ID.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from mailgem.connections.errors import MailgemError

if TYPE_CHECKING:
    from .ledger_db import Backend, LedgerTarget

__all__ = ["OwnerLease", "LeaseLapsedError", "LEASE_HELD_SHARE"]

log = logging.getLogger("mailgem.gems")

# A message starts only while its run's lease was renewed less than this share of lease_s ago.
# Renewals come every third of it: a late one has nearly half the lease to arrive, and a fifth is
# still left when a message starts (its first byte goes out within milliseconds).
LEASE_HELD_SHARE = 0.8

_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def _lease_clock() -> float:
    """Seconds on a clock that keeps counting while the machine sleeps (``CLOCK_BOOTTIME`` on
    Linux; elsewhere the monotonic clock): a lease runs out by the database's clock meanwhile."""
    return time.clock_gettime(_BOOTTIME) if _BOOTTIME is not None else time.monotonic()


class LeaseLapsedError(MailgemError):
    """This run's lease in the ledger ran out, or may have: another run may have taken over the
    messages it claimed, so no further message may start (the message says why and what to do)."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class OwnerLease:
    """The lease part of :class:`~mailgem.gems.email.run.ledger.SendLedger` (a mixin: it shares the
    ledger's connection, backend and ``failure``)."""

    owner: str
    target: LedgerTarget
    failure: BaseException | None
    _backend: Backend
    _heartbeat: threading.Thread | None
    _renewed_at: float | None
    _stop: threading.Event

    def _db(self) -> Any:
        raise NotImplementedError

    def _close_db(self) -> None:
        raise NotImplementedError

    def _start_lease(self) -> None:
        """List this owner with a lease, committed on its own before its first claim (a claim in
        the same transaction would be invisible to a racing PostgreSQL statement's snapshot), and
        start renewing it."""
        if self._heartbeat is not None:
            return
        db = self._db()
        b = self._backend
        asked_at = _lease_clock()
        b.execute(db, b.begin)
        try:
            b.execute(db, f"DELETE FROM ledger_owners WHERE alive_until < {b.now} - 86400")  # long-dead runs
            b.execute(db, f"INSERT INTO ledger_owners (owner, host, pid, started_at, alive_until) VALUES"
                          f" (?, ?, ?, ?, {b.now} + ?)",
                      (self.owner, socket.gethostname(), os.getpid(), _now(), self.target.lease_s))
            b.execute(db, "COMMIT")
        except BaseException:
            with contextlib.suppress(b.error):
                b.execute(db, "ROLLBACK")
            raise
        self._renewed_at = asked_at
        self._heartbeat = threading.Thread(target=self._renew, name="mailgem-ledger-lease", daemon=True)
        self._heartbeat.start()

    def _renew(self) -> None:
        """The lease thread: renew every ``lease_s / 3`` s, only while the lease has not run out
        by the database's clock. A renewal that fails or comes too late stops the run (another
        run could take over this run's messages once the lease runs out)."""
        b = self._backend
        try:
            while not self._stop.wait(self.target.lease_s / 3):
                asked_at = _lease_clock()
                renewed = b.execute(self._db(), f"UPDATE ledger_owners SET alive_until = {b.now} + ?"
                                                f" WHERE owner = ? AND alive_until > {b.now}",
                                    (self.target.lease_s, self.owner)).rowcount
                if renewed != 1:
                    unrenewed = _lease_clock() - (self._renewed_at or asked_at)
                    self._lapsed(f"had run out by the database's clock when it was renewed, {unrenewed:.1f} s after "
                                 "the renewal before")
                    return
                self._renewed_at = asked_at
        except Exception as exc:  # noqa: BLE001 - kept for the sender, which stops the run
            log.error("ledger %s: the lease of this run could not be renewed: %s", self.target, exc)
            self.failure = self.failure or exc
        finally:
            self._close_db()

    def _lapsed(self, what: str) -> None:
        error = LeaseLapsedError(
            f"this run's lease in ledger {self.target} {what} (lease_s {self.target.lease_s:g} s): the process was "
            "paused (stopped, frozen or asleep) or the ledger answered too slowly, so another run may have taken "
            "over the messages this run claimed, and no further message was started. Re-run with the same run key "
            "to send what was not accepted; if the ledger is slow, raise ledger.lease_s")
        log.error("%s", error)
        self.failure = self.failure or error

    def lease_held(self) -> bool:
        """Whether a message may start now: no lease yet (nothing claimed), or one renewed less
        than ``LEASE_HELD_SHARE × lease_s`` ago. When not, :attr:`failure` says why (the run
        must stop). One clock read: cheap enough for every message."""
        if isinstance(self.failure, LeaseLapsedError):
            return False
        if self._renewed_at is None:
            return True
        age = _lease_clock() - self._renewed_at
        if age < LEASE_HELD_SHARE * self.target.lease_s:
            return True
        self._lapsed(f"was last renewed {age:.1f} s ago")
        return False
