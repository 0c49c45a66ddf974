"""How a run of :mod:`.sender` ends: the rows of messages that did not go out (``not_started``
after a stop request, else left out of the report), the messages not built yet after a stop,
and the ledger's last commit (a mixin of :class:`~.sender.SendRun`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from ..content.compose import Unit
from .context import SendContext
from .ledger import SendLedger
from .outcome import describe_error
from .report import DeliveryRow
from .rules import RunRules
from .status import DeliveryStatus

__all__ = ["RunEnding"]


class RunEnding:
    """The end of a :class:`~.sender.SendRun` (it holds the attributes declared here)."""

    ctx: SendContext
    rules: RunRules
    ledger: SendLedger | None
    rows: list[DeliveryRow]
    _parts: deque[Unit]
    _source: Iterator[tuple[Unit, DeliveryRow | None]]

    def _not_started(self, unsent: list[DeliveryRow]) -> None:
        """Messages that never started: ``not_started`` rows with the stop's reason after a stop
        request; otherwise left out of the report (in the ledger a claimed one stays
        ``sending``, so a re-run sends it with the Message-ID it never used)."""
        if not self.rules.stopped_by_request:
            self._drop_unsent(unsent)
            return
        assert self.ctx.stop is not None
        for row in unsent:
            row.status, row.error, row.error_type = DeliveryStatus.NOT_STARTED, f"not sent: {self.ctx.stop.reason}", None
            self.ctx.on_done(row)

    def _drop_unsent(self, unsent: list[DeliveryRow]) -> None:
        ids = {id(r) for r in unsent}
        self.rows[:] = [r for r in self.rows if id(r) not in ids]

    def _says_why_the_ledger_stopped(self, row: DeliveryRow) -> bool:
        """Whether ``row`` (a message that did not go out) says why the ledger stopped the run
        (:meth:`RunRules.ledger_stopped`); it is reported when it does."""
        if not self.rules.ledger_stopped(row):
            return False
        self.ctx.on_done(row)
        return True

    def _end(self) -> list[DeliveryRow]:
        """Report what was not built after a stop request, commit the ledger; the rows (see
        :meth:`RunRules.verdict`).

        Raises:
            StopRun: the ledger broke (``fatal``), or a message failed under ``on_error: stop``.
        """
        rules = self.rules
        if rules.stopped_by_request:
            self._report_unbuilt()
        if self.ledger is not None and rules.fatal is None:
            try:
                self.ledger.flush()
                self.ledger.check()
            except Exception as exc:  # noqa: BLE001
                row = self.rows[-1]
                reason = describe_error(exc, "recording outcomes in the ledger")
                row.error = f"{row.error}; {reason}" if row.error else reason
                rules.broke(row, exc)
        return rules.verdict(self.rows)

    def _report_unbuilt(self) -> None:
        """After a stop request, every message not built yet: a row each, so the report says what was not sent."""
        unbuilt: list[DeliveryRow] = []
        for unit, row in (*((u, None) for u in self._parts), *self._source):
            if row is None:
                row = DeliveryRow(message_key=unit.key, status=DeliveryStatus.NOT_STARTED, connection=self.ctx.connection)
                self.rows.append(row)
            unbuilt.append(row)
        self._not_started(unbuilt)
