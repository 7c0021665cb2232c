"""Stop work for a client that has gone away.

Streams get this from the framework (the streaming response listens for
`http.disconnect`). A non-streamed call can wait a long time for its upstream
answer, so the route runs it with `run_until_disconnect()`: if the client closes the
connection first, the call is cancelled (which closes the upstream request) and
`ClientDisconnected` is raised; the proxy still records the call's usage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from litestar.types import Receive

from gateway.errors import ClientDisconnected

__all__ = ["run_until_disconnect"]

T = TypeVar("T")


async def run_until_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work` in the current task (the request body must already be read); a
    watcher task cancels it if the client leaves first. One task per call, no more."""
    current = asyncio.current_task()
    assert current is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        current.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if gone:
            current.uncancel()
            raise ClientDisconnected("Client closed the connection.") from None
        raise
    finally:
        watcher.cancel()
