"""The thread a send ledger's writes run in (:mod:`.ledger`), so that a round trip to the
database never stops the event loop, and with it every SMTP session of the run.

One thread with its own database connection (a connection serves one thread at a time): the
claims and the grouped outcome commits of one run go through it in the order they were asked,
so an outcome is never committed before its message's claim. A claim is awaited by the sender
(:meth:`LedgerThread.run`), an outcome commit is not (:meth:`LedgerThread.submit`). psycopg and
sqlite3 release the GIL while they wait for the database, so the sessions go on meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["LedgerThread"]

T = TypeVar("T")


class LedgerThread:
    """One worker thread, started on first use, for the database work of one ledger.

    ``close_db``: called in that thread when it is shut down (it closes the thread's connection).
    """

    def __init__(self, close_db: Callable[[], None]) -> None:
        self._close_db = close_db
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        """Whether the thread runs (something was asked of it since it was last closed)."""
        return self._executor is not None

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailgem-ledger")
            return self._executor

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the thread; its result (or its exception) once it is done, while the
        event loop goes on."""
        return await asyncio.wrap_future(self._pool().submit(fn, *args))

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """``fn(*args)`` queued in the thread, not awaited."""
        return self._pool().submit(fn, *args)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the thread, waited for here (after everything queued before it).

        Raises:
            Whatever ``fn`` raises.
        """
        return self._pool().submit(fn, *args).result()

    def close(self) -> None:
        """Close the thread's connection and end the thread (what was queued runs first)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.submit(self._close_db)
            executor.shutdown(wait=True)
