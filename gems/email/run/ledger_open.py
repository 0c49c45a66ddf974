"""Opening a run's send ledger (:mod:`.ledger`): where it lives, with its password from the
fabric's secret store, opened and checked, on the driver before anything is sent (and by the
runner's checks before Spark starts)."""

from __future__ import annotations

import logging

from mailgem.connections.errors import ConfigError
from mailgem.fabric.model import Fabric

from ..properties import LedgerOptions
from .ledger import SendLedger
from .ledger_db import LedgerTarget, damage_of

__all__ = ["ledger_target", "open_ledger", "check_ledger", "open_run_ledger"]

log = logging.getLogger("mailgem.gems")


def ledger_target(options: LedgerOptions | None, fabric: Fabric | None, user: str | None) -> LedgerTarget | None:
    """Where the ledger of ``options`` lives, with its password from ``fabric``'s store
    (``ledger.secret``); ``None`` without a ledger.

    Raises:
        AccessDeniedError, SecretNotFoundError, SecretStoreError: the password cannot be read.
    """
    if options is None:
        return None
    password = fabric.secret(options.secret, user) if fabric is not None and options.secret is not None else None
    return LedgerTarget(path=options.path, url=options.url, password=password, lease_s=options.lease_s)


def open_ledger(target: LedgerTarget, job: str, run_key: str, destination: str) -> SendLedger:
    """The ledger at ``target`` for this job, run key and destination (its tables created),
    checked that a SQLite file is not damaged (:meth:`SendLedger.verify`).

    Raises:
        LedgerDamagedError: the SQLite file is damaged, or is not a SQLite database.
        ConfigError: it cannot be opened (see :class:`SendLedger`); backend errors.
    """
    try:
        ledger = SendLedger(target, job, run_key, destination)
        try:
            ledger.verify()
        except BaseException:
            ledger.close()
            raise
        return ledger
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - the database's own reason, for the user
        damage = damage_of(target, exc)
        if damage is not None:
            raise damage from None
        raise ConfigError(f"cannot open the ledger {target}: {type(exc).__name__}: {exc}") from None


def check_ledger(target: LedgerTarget) -> None:
    """Open the ledger at ``target`` and close it again (:func:`open_ledger`). The run's
    preflight calls it on the driver, before Spark starts: a damaged ledger is reported in
    seconds, with what to do.

    Raises:
        LedgerDamagedError, ConfigError: see :func:`open_ledger`.
    """
    open_ledger(target, "", "", "").close()


def open_run_ledger(target: LedgerTarget | None, job: str, run_key: str, destination: str) -> SendLedger | None:
    """The run's ledger, if any, checked (a damaged SQLite file is a clear error, not the
    database's mid-run); says when entries for other destinations do not count.

    Raises:
        ConfigError, LedgerDamagedError: see :func:`open_ledger`.
    """
    if target is None:
        return None
    ledger = open_ledger(target, job, run_key, destination)
    elsewhere = ledger.elsewhere()
    if elsewhere:
        log.warning("gem %s: the ledger holds messages of run key %r sent to %s; they do not count for %s",
                    job, run_key, "; ".join(elsewhere), destination)
    return ledger
