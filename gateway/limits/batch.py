"""Auto-pipelining: script calls made in the same event-loop turn share one round trip.

redis-py spends ~65-80 us of CPU per command on its own (connection checkout, packing,
an await and two syscalls per command); in a pipeline of 32 the same command costs
~15 us (measured on these machines, hiredis parser). Under load many requests admit
and settle at once, so `AutoPipeline.call()` queues the call and flushes the queue
on the next loop iteration as one non-transactional pipeline: no added wait, fewer
syscalls, less CPU per request. Each script still runs atomically on the server.

A pipeline that fails as a whole (connection lost) fails every call in it. A script
the server no longer knows (it restarted) is loaded again and re-run on its own. A
caller that stops waiting (its deadline passed) does not cancel the pipeline: the
others in it still get their answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

__all__ = ["AutoPipeline"]

_Call = tuple[AsyncScript, Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class AutoPipeline:
    def __init__(self, client: Redis | RedisCluster) -> None:
        self._client = client
        self._queue: list[_Call] = []
        self._running: set[asyncio.Task[None]] = set()

    async def call(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run `script` with `keys` and `args` in the next pipeline; return its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((script, keys, args, future))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._execute(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _execute(self, batch: list[_Call]) -> None:
        if len(batch) == 1:  # nothing to share the trip with: a plain EVALSHA is cheaper
            script, keys, args, future = batch[0]
            try:
                result = await script(keys, args)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
                return
            if not future.done():
                future.set_result(result)
            return
        pipe = self._client.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        try:
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (script, keys, args, future), result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError):
                try:
                    result = await script(keys, args)  # loads it, then EVALSHA again
                except Exception as exc:
                    result = exc
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
