"""Progress of a send: a rich progress bar in a terminal, log lines with counts otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from typing import Any

from .report import DeliveryRow

__all__ = ["Progress"]

log = logging.getLogger("mailgem.gems")


class Progress:
    """Counts outcomes by status; shows a bar when stderr is a terminal and ``total`` > 1.

    Args:
        total: messages expected.
        label: what is being sent (the gem's name).
        interval_s: seconds between log lines when not in a terminal.
    """

    def __init__(self, total: int, label: str, *, interval_s: float = 5.0, interactive: bool | None = None) -> None:
        self.total = total
        self.label = label
        self.counts: Counter[str] = Counter()
        self.interval_s = interval_s
        self._last = time.monotonic()
        self._started = self._last
        self._bar: Any = None
        interactive = sys.stderr.isatty() if interactive is None else interactive
        if interactive and total > 1:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TimeRemainingColumn

            # On stderr, like the log lines: stdout is the command's result (``--json``, ``| head``).
            self._bar = RichProgress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), transient=False, console=Console(stderr=True))
            self._bar.start()
            self._task = self._bar.add_task(f"{label}: sending", total=total)

    def __call__(self, row: DeliveryRow) -> None:
        self.counts[row.status] += 1
        done = sum(self.counts.values())
        if done > self.total:  # a message split into parts to fit the size limit: more messages than planned
            self.total = done
            if self._bar is not None:
                self._bar.update(self._task, total=done)
        if self._bar is not None:
            self._bar.update(self._task, advance=1)
        elif time.monotonic() - self._last >= self.interval_s:
            self._last = time.monotonic()
            log.info("%s: %s", self.label, self.summary())

    def summary(self) -> str:
        """``"120/500 messages: 118 sent, 2 failed (40.1 messages/s)"``."""
        done = sum(self.counts.values())
        rate = done / max(time.monotonic() - self._started, 1e-9)
        parts = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items()))
        return f"{done}/{self.total} messages: {parts or 'none yet'} ({rate:.1f} messages/s)"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        log.info("%s: %s", self.label, self.summary())
