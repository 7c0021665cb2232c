"""A lean Redis connection for the limiter's hot path: pipelined RESP over one socket.

redis-py's asyncio client costs ~15-25 us of CPU per pipelined command on these
machines (packing in Python, per-reply parsing wrappers, pool and observability hooks);
the limiter sends two scripts per request, so on a busy gateway that is a large share
of the CPU a request costs. This connection writes a whole batch of commands packed by
hiredis (C) in one `write()` and parses the replies with hiredis' reader as they arrive,
in order: a few microseconds per command. It serves `redis://` over TCP (the store's
URL, password and database); Redis Cluster, TLS and unix sockets stay on redis-py.

Failures surface as redis-py exceptions (`ConnectionError`, `TimeoutError`,
`ResponseError`), so the limiter's fail modes treat both clients alike; a lost
connection fails its pending commands and the next batch connects again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

__all__ = ["RespClient"]


Done = Callable[[list[Any]], None]


class _Batch:
    __slots__ = ("done", "left", "replies")

    def __init__(self, done: Done, count: int) -> None:
        self.done = done
        self.left = count
        self.replies: list[Any] = []


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.pending: deque[_Batch] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.pending
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            batch = pending[0]
            batch.replies.append(reply)
            batch.left -= 1
            if not batch.left:
                pending.popleft()
                batch.done(batch.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        error = RedisConnectionError("limits store connection lost")
        while self.pending:
            batch = self.pending.popleft()
            batch.done(batch.replies + [error] * batch.left)

    def submit(self, commands: list[bytes], done: Done) -> None:
        assert self.transport is not None
        self.pending.append(_Batch(done, len(commands)))
        self.transport.write(b"".join(commands))

    def send(self, commands: list[bytes]) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

        def done(replies: list[Any]) -> None:
            if not future.done():  # the waiter may have been cancelled
                future.set_result(replies)

        self.submit(commands, done)
        return future


class RespClient:
    """Pipelined commands on one lazily opened connection (`AUTH` and `SELECT` on open)."""

    def __init__(
        self,
        host: str,
        port: int,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout_s: float = 2.0,
    ) -> None:
        self._address = (host, port)
        self._hello: list[bytes] = []
        if password:
            creds = (username, password) if username else (password,)
            self._hello.append(self.pack(b"AUTH", *creds))
        if db:
            self._hello.append(self.pack(b"SELECT", db))
        self._connect_timeout_s = connect_timeout_s
        self._protocol: _Protocol | None = None
        self._opening: asyncio.Future[_Protocol] | None = None

    @staticmethod
    def pack(*args: Any) -> bytes:
        return bytes(hiredis.pack_command(args))

    @property
    def connected(self) -> bool:
        return self._protocol is not None and not self._protocol.lost

    def submit(self, commands: list[bytes], done: Done) -> None:
        """Write `commands` now (needs `connected`); `done(replies)` runs when every reply
        is in, in order: values, or exceptions (error replies, a lost connection)."""
        assert self._protocol is not None
        self._protocol.submit(commands, done)

    async def execute(self, commands: list[bytes]) -> list[Any]:
        """Every command's reply in order; error replies come back as `ResponseError`s."""
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connect()
        return await protocol.send(commands)

    async def _connect(self) -> _Protocol:
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
        opening = self._opening
        try:
            return await asyncio.shield(opening)
        finally:
            if opening.done():
                self._opening = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, protocol = await loop.create_connection(_Protocol, *self._address)
                if self._hello:
                    for reply in await protocol.send(self._hello):
                        if isinstance(reply, ResponseError):
                            protocol.transport.close()  # type: ignore[union-attr]
                            raise reply
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"limits store unreachable ({type(exc).__name__})") from exc
        self._protocol = protocol
        return protocol

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
