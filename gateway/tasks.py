"""Background work that must not be lost to the garbage collector or to shutdown.

`Tasks.spawn()` keeps a reference to each task until it ends; the app's lifespan
drains the set on shutdown (bounded wait) so usage records are not dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["Tasks", "stop"]

log = logging.getLogger("railgate")

DRAIN_TIMEOUT_S = 5.0


class Tasks:
    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._running.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background task failed (%s)", type(task.exception()).__name__)

    async def drain(self) -> None:
        """Wait (at most `DRAIN_TIMEOUT_S`) for pending tasks; called on shutdown."""
        if self._running:
            await asyncio.wait(list(self._running), timeout=DRAIN_TIMEOUT_S)


async def stop(task: asyncio.Task[Any] | None) -> None:
    """Cancel a long-running task (a writer, a poller) and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
