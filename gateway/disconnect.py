"""Stop work for a client that has gone away.

Streams get this from the framework (the streaming response listens for
`http.disconnect`). A non-streamed call can wait a long time for its upstream
answer, so the route runs it with `run_until_disconnect()`: if the client closes the
connection first, the call is cancelled (which closes the upstream request) and
`ClientDisconnected` is raised; the proxy still records the call's usage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from litestar.types import Receive

from gateway.errors import ClientDisconnected

__all__ = ["run_until_disconnect"]

T = TypeVar("T")


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def run_until_disconnect(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """Await `work` (the request body must already be read); cancel it if the client leaves."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
        watch.cancel()
    if task.cancelled() or not task.done():
        await asyncio.gather(task, return_exceptions=True)
        raise ClientDisconnected("Client closed the connection.")
    return task.result()
