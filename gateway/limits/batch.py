"""Auto-pipelining: script calls made in the same event-loop turn share one round trip.

redis-py spends ~65-80 us of CPU per command on its own (connection checkout, packing,
an await and two syscalls per command); in a pipeline of 32 the same command costs
~15 us, and over the lean connection of `resp.py` a few (measured on these machines).
Under load many requests admit and settle at once, so `AutoPipeline.call()` queues the
call and flushes the queue on the next loop iteration as one pipeline: no added wait,
fewer syscalls, less CPU per request. Each script still runs atomically on the server.

On the lean connection a flush writes the batch at once and the replies are handed to
the waiting calls straight from the socket callback (no task per batch); otherwise
(Redis Cluster, TLS, or while connecting) a task runs it through redis-py.

Work after the answer (settlements, lease renewals, compensations) is not urgent: it
waits up to `LAZY_S` to ride along with the next admission's batch instead of costing
a round trip of its own (two syscalls, the biggest CPU cost of a lone request).

Deadlines are per batch (one timer, not one per call): calls still unanswered after
`deadline_s` fail with `TimeoutError`. The batch itself is never cancelled, so a late
answer still arrives; a call made with `late=` hands it to that callback (e.g. to undo
a reservation nobody waited for). A batch that fails as a whole (connection lost)
fails every call in it; a script the server no longer knows (it restarted) is loaded
again and run once more by its caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError

from gateway.limits.resp import RespClient

__all__ = ["AutoPipeline"]

Late = Callable[[Any], None]
LAZY_S = 0.005
"""How long a non-urgent call may wait for company before it is sent on its own."""


class _Call(NamedTuple):
    script: AsyncScript
    keys: Sequence[Any]
    args: Sequence[Any]
    future: asyncio.Future[Any]
    """Resolved with the reply: a value, or an exception instance (never raised into it)."""
    late: Late | None


class AutoPipeline:
    """`client` runs batches and loads scripts; `fast`, when given, runs the batches
    over a lean connection to the same server (`resp.py`)."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        deadline_s: float = 0.25,
        fast: RespClient | None = None,
    ) -> None:
        self._client = client
        self._fast = fast
        self.deadline_s = deadline_s
        self._queue: list[_Call] = []
        self._running: set[asyncio.Task[None]] = set()
        self._soon = False
        self._later: asyncio.TimerHandle | None = None

    async def call(
        self,
        script: AsyncScript,
        keys: Sequence[Any],
        args: Sequence[Any],
        late: Late | None = None,
        urgent: bool = True,
    ) -> Any:
        """Run `script` in the next batch and return its result; `late(result)` gets
        the result if it arrives after the deadline or after the caller stopped waiting.
        A call that is not `urgent` may wait up to `LAZY_S` for the next batch."""
        reply = await self._enqueue(script, keys, args, late, urgent)
        if isinstance(reply, NoScriptError):
            try:
                async with asyncio.timeout(self.deadline_s * 4):
                    return await script(keys, args)  # loads it, runs it
            except RedisClusterException as exc:
                raise RedisError(f"cluster: {type(exc).__name__}") from exc
        if isinstance(reply, Exception):
            raise reply
        return reply

    def send(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Run `script` in the next batch; nobody waits for the result (used for
        compensations that the windows' own expiry would also repair)."""
        self._enqueue(script, keys, args, None, urgent=False)

    def _enqueue(
        self,
        script: AsyncScript,
        keys: Sequence[Any],
        args: Sequence[Any],
        late: Late | None,
        urgent: bool,
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Call(script, keys, args, future, late))
        if urgent:
            if not self._soon:
                self._soon = True
                loop.call_soon(self._flush)
        elif self._later is None:
            # One timer at a time, never cancelled: under load a flush usually comes
            # first and the timer then finds the queue empty (cheaper than re-arming).
            self._later = loop.call_later(LAZY_S, self._on_later)
        return future

    def _on_later(self) -> None:
        self._later = None
        if self._queue and not self._soon:
            self._flush()

    def _flush(self) -> None:
        self._soon = False
        batch, self._queue = self._queue, []
        if not batch:
            return
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.deadline_s, _expire, batch)
        fast = self._fast
        if fast is not None and fast.connected:
            pack = fast.pack
            commands = [
                pack(b"EVALSHA", c.script.sha, len(c.keys), *c.keys, *c.args) for c in batch
            ]
            fast.submit(commands, lambda replies: _deliver(batch, replies, timer))
            return
        task = loop.create_task(self._execute(batch, timer))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _execute(self, batch: list[_Call], timer: asyncio.TimerHandle) -> None:
        try:
            if self._fast is not None:
                pack = self._fast.pack
                replies = await self._fast.execute(
                    [pack(b"EVALSHA", c.script.sha, len(c.keys), *c.keys, *c.args) for c in batch]
                )
            elif len(batch) == 1:  # nothing to share the trip with: a plain EVALSHA is cheaper
                only = batch[0]
                replies = [await only.script(only.keys, only.args)]
            else:
                pipe = self._client.pipeline(transaction=False)
                for c in batch:
                    pipe.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
                replies = list(await pipe.execute(raise_on_error=False))
        except Exception as exc:
            replies = [exc] * len(batch)
        _deliver(batch, replies, timer)


def _deliver(batch: list[_Call], replies: list[Any], timer: asyncio.TimerHandle) -> None:
    timer.cancel()
    for call, reply in zip(batch, replies, strict=True):
        if isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"):
            reply = NoScriptError(str(reply))
        elif isinstance(reply, RedisClusterException):  # outside redis-py's RedisError tree
            reply = RedisError(f"cluster: {type(reply).__name__}")
        if not call.future.done():
            call.future.set_result(reply)
        elif call.late is not None and not isinstance(reply, Exception):
            call.late(reply)


def _expire(batch: list[_Call]) -> None:
    for call in batch:
        if not call.future.done():
            call.future.set_result(TimeoutError("limits store deadline passed"))
