"""The run's rules over which message may still go: ``on_error: stop``, a stop request, the
ledger's claim. One :class:`RunRules` per run holds what decides them; each message asks through
its own small :class:`MessageGate`, the :class:`~mailgem.connections.gate.Gate` the delivery layer
knows.

- A message *fails* (its row is ``failed`` or ``deferred``): with ``on_error: stop`` no message
  after it (by position in the run) starts; those before it go on.
- The run *breaks* (its ledger could not be written, or this run's lease in it may have lapsed):
  no message that has not started starts, whatever ``on_error`` says (a re-run could send twice).
- A stop is *requested* (:class:`~.stop.StopSignal`): no new message and no retry starts; every
  message that did not start is reported ``not_started``.
"""

from __future__ import annotations

from mailgem.connections.gate import OPEN

from .ledger import SendLedger
from .outcome import StopRun, describe_error
from .report import DeliveryRow
from .stop import StopSignal

__all__ = ["MessageGate", "RunRules"]


class RunRules:
    """What one run decided so far about which messages may still go.

    Args:
        stop: the run's stop signal, if it can be stopped on request.
        ledger: the run's ledger, if any (its claim must hold for anything to be written).
        stop_on_error: ``on_error: stop``.

    Attributes:
        failure: the first message that failed and why, ``(row, error)``, or ``None``.
        fatal: the first row that says why the run broke and the error (the ledger's), or ``None``.
    """

    __slots__ = ("_stop_after", "failure", "fatal", "ledger", "stop", "stop_on_error")

    def __init__(self, stop: StopSignal | None, ledger: SendLedger | None, stop_on_error: bool) -> None:
        self.stop = stop
        self.ledger = ledger
        self.stop_on_error = stop_on_error
        self.failure: tuple[DeliveryRow, BaseException] | None = None
        self.fatal: tuple[DeliveryRow, BaseException] | None = None
        self._stop_after: int | None = None  # the earliest failed message's position

    def failed(self, row: DeliveryRow, error: BaseException, position: int) -> None:
        """The message at ``position`` failed (the first failure is the one kept)."""
        if self.failure is None:
            self.failure = (row, error)
        self._stop_after = position if self._stop_after is None else min(self._stop_after, position)

    def broke(self, row: DeliveryRow, error: BaseException) -> None:
        """The run must stop because of ``error`` (the ledger's); ``row`` says so (the first one stands)."""
        if self.fatal is None:
            self.fatal = (row, error)

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self.stop is not None and self.stop.stopping

    @property
    def stopped_by_request(self) -> bool:
        """Whether the run stops because a stop was requested (and its ledger did not fail):
        then every message that did not start is reported, whatever ``on_error`` says."""
        return self.fatal is None and self.stop is not None and self.stop.stopping

    @property
    def halted(self) -> bool:
        """Whether no further message is built: the run broke, or a message failed under
        ``on_error: stop``."""
        return self.fatal is not None or (self.failure is not None and self.stop_on_error)

    def fence(self) -> bool:
        """Whether this run may still send at all, asked before every attempt (retries too): not
        once the ledger failed or this run's lease in it may have lapsed."""
        ledger = self.ledger
        return ledger is None or (ledger.failure is None and ledger.lease_held())

    def proceeds(self, position: int) -> bool:
        """Whether the run goes on to the message at ``position``: not once it broke or a stop
        was requested; with ``on_error: stop``, not when it comes after a message that failed
        (earlier ones go on). The fence is asked apart (the deliverer asks it itself)."""
        return (self.fatal is None and not self.stopping
                and not (self.stop_on_error and self._stop_after is not None and position > self._stop_after))

    def may_start(self, position: int) -> bool:
        """Whether the message at ``position`` may still start: the fence is open and the run
        goes on to it."""
        return self.fence() and self.proceeds(position)

    def ledger_stopped(self, row: DeliveryRow) -> bool:
        """When the ledger failed (or this run's lease in it may have lapsed) and no row says so
        yet, ``row`` (a message that did not go out) says it, "not sent: why", and the run
        breaks; whether it does (the caller reports the row)."""
        ledger = self.ledger
        if ledger is None or ledger.failure is None or self.fatal is not None:
            return False
        row.error = f"not sent: {describe_error(ledger.failure, 'recording outcomes in the ledger')}"
        self.broke(row, ledger.failure)
        return True

    def verdict(self, rows: list[DeliveryRow]) -> list[DeliveryRow]:
        """How the run ended: ``rows`` when it may go on (a stop request's rows say why they
        were not sent).

        Raises:
            StopRun: the run broke (``fatal``), or a message failed under ``on_error: stop``;
                with ``rows``.
        """
        if self.fatal is not None:
            row, cause = self.fatal
            raise StopRun(f"message {row.message_key}: {row.error}", rows, cause, fatal=True)
        if self.failure is not None and self.stop_on_error and not self.stopping:
            # After a stop request the report is the story (the caller knows why it stopped): a
            # message the stop kept from its retry must not turn the stop into on_error's.
            row, cause = self.failure
            raise StopRun(f"message {row.message_key}: {row.error or cause}", rows, cause)
        return rows

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less: a stop request ends the wait."""
        await (self.stop.pause(seconds) if self.stop is not None else OPEN.pause(seconds))


class MessageGate:
    """One message's :class:`~mailgem.connections.gate.Gate`: the run's rules as the delivery
    layer asks them. ``may_start``: the run goes on to this message (:meth:`RunRules.proceeds`);
    ``may_write``: this run may still send at all (:meth:`RunRules.fence`). Waits end on a stop.

    One small object a message (the hot path: built once per :meth:`Deliverer.send`).
    """

    __slots__ = ("_position", "_rules")

    def __init__(self, rules: RunRules, position: int) -> None:
        self._rules, self._position = rules, position

    @property
    def stopping(self) -> bool:
        return self._rules.stopping

    async def pause(self, seconds: float) -> None:
        await self._rules.pause(seconds)

    def may_start(self) -> bool:
        return self._rules.proceeds(self._position)

    def may_write(self) -> bool:
        return self._rules.fence()
