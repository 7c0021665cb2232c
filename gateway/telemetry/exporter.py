"""`BatchExporter`: spans to one OTLP/HTTP JSON endpoint, batched, bounded, never blocking.

    submit(spans)   (per call, after the answer)  → append to a bounded deque, O(1)
    writer task     (one per destination)         → every `interval_ms`, or at once when
                    a batch is full: encode, POST with `timeout_ms`, next batch

A destination that is down, slow or refusing costs the requests nothing: its spans
wait in the queue while a POST is in flight, new spans beyond `queue_spans` are
dropped, and a batch whose POST fails is dropped (telemetry is not retried; the ledger
is the record that must not be lost). Every dropped span counts in
`railgate_telemetry_dropped_total{exporter="<name>"}`, every delivered one in
`railgate_telemetry_exported_total`. Shutdown sends what is queued for at most
`shutdown_timeout_s` and drops (and counts) the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections import deque
from collections.abc import Mapping
from itertools import islice
from typing import Any

import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from gateway.config import ExportSettings
from gateway.metrics import Counters
from gateway.tasks import stop
from gateway.telemetry.otlp import SCOPE, encode_attributes, encode_span, request_chunks
from gateway.telemetry.spans import AttributeValue, Span

__all__ = ["BatchExporter"]

log = logging.getLogger("railgate.telemetry")

DROPPED = "railgate_telemetry_dropped_total"
EXPORTED = "railgate_telemetry_exported_total"


class BatchExporter:
    def __init__(
        self,
        name: str,
        url: str,
        settings: ExportSettings,
        counters: Counters,
        resource: Mapping[str, AttributeValue],
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        compress: bool = False,
        scope: Mapping[str, Any] = SCOPE,
    ) -> None:
        self.name = name
        self.url = url
        self._settings = settings
        self._queue_spans, self._batch_spans = settings.queue_spans, settings.batch_spans
        self._counters = counters
        self._resource = encode_attributes(resource)
        self._scope = dict(scope)
        self._headers = {"content-type": "application/json", **(headers or {})}
        if compress:
            self._headers["content-encoding"] = "gzip"
        self._compress = compress
        self._timeout = aiohttp.ClientTimeout(total=timeout_s or settings.timeout_ms / 1000)
        self._queue: deque[bytes] = deque()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._failing = False
        self._overflowing = False

    @property
    def pending(self) -> int:
        return len(self._queue)

    def submit(self, spans: list[Span]) -> None:
        """Queue `spans` for export; drops (and counts) what does not fit."""
        queue = self._queue
        room = self._queue_spans - len(queue)
        if room < len(spans):
            lost = len(spans) - max(room, 0)
            self._counters.inc(DROPPED, self.name, by=lost)
            if not self._overflowing:
                self._overflowing = True
                log.warning("telemetry queue %s full: spans are dropped", self.name)
            spans = spans[: max(room, 0)]
        queue.extend(map(encode_span, spans))
        if len(queue) >= self._batch_spans:
            self._full.set()

    def start(self) -> None:
        """Start the writer; called once by the app's lifespan, inside the event loop."""
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"export-{self.name}")

    async def close(self) -> None:
        """Stop the writer, send what is queued for at most `shutdown_timeout_s`."""
        await stop(self._task)
        self._task = None
        if self._session is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.shutdown_timeout_s):
                while self._queue:
                    await self._send_batch()
        if self._queue:
            self._counters.inc(DROPPED, self.name, by=len(self._queue))
            self._queue.clear()
        await self._session.close()
        self._session = None

    async def _run(self) -> None:
        interval = self._settings.interval_ms / 1000
        while True:
            self._full.clear()
            if len(self._queue) < self._settings.batch_spans:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await self._full.wait()
            # One batch, then more only while whole batches wait: what arrives during a
            # POST waits for its batch to fill (or the interval), not a POST of its own.
            await self._send_batch()
            while len(self._queue) >= self._settings.batch_spans:
                await self._send_batch()

    async def _send_batch(self) -> None:
        if not self._queue:
            return
        batch = [
            self._queue.popleft()
            for _ in islice(range(self._settings.batch_spans), len(self._queue))
        ]
        count = len(batch)
        pieces = request_chunks(batch, self._resource, self._scope)
        del batch[:]  # the spans now live in the pieces only
        if self._compress:
            packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: a gzip stream
            pieces = [packer.compress(piece) for piece in pieces] + [packer.flush()]
        body = _Pieces(pieces)
        assert self._session is not None
        try:
            async with self._session.post(self.url, data=body, headers=self._headers) as resp:
                await resp.read()
                ok = resp.status < 300
                problem = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            ok, problem = False, type(exc).__name__
        if ok:
            self._counters.inc(EXPORTED, self.name, by=count)
            if self._failing:
                self._failing = False
                log.warning("telemetry export %s resumed", self.name)
        else:
            self._counters.inc(DROPPED, self.name, by=count)
            if not self._failing:
                self._failing = True
                log.warning(
                    "telemetry export %s failed (%s): spans are dropped", self.name, problem
                )
        if self._overflowing and len(self._queue) < self._settings.queue_spans // 2:
            self._overflowing = False


class _Pieces(Payload):
    """A request body written piece by piece (`otlp.request_chunks`), its length known."""

    def __init__(self, pieces: list[bytes]) -> None:
        super().__init__(pieces, content_type="application/json")
        self._size = sum(map(len, pieces))

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._value).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        for piece in self._value:
            if piece:
                await writer.write(piece)
