"""A small sync facade over the async core, safe inside a running event loop (notebooks)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_sync"]

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion and return its result.

    Outside an event loop this is ``asyncio.run``. Inside one (Jupyter, IPython), calling
    ``asyncio.run`` would fail, so the coroutine runs on a fresh loop in a worker thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailgem-sync") as pool:
        return pool.submit(asyncio.run, coro).result()
