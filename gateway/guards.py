"""Content seam: where the rails see what goes to the provider and what comes back.

`on_request` runs after admission and before the upstream call, and may rewrite
`call.request.body`, raise `ContentBlocked`, or return a refusal to answer with. `on_response` sees a complete answer
before the client does. `open_stream` returns a per-stream `StreamEdit` (or None to
relay untouched) that sees each SSE event in order and may hold back, rewrite or end
the stream. `gateway.content.RailStages` implements it with each tenant's rails pipeline.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol, TypeVar

from gateway.call import Call
from gateway.providers.base import UpstreamReply

__all__ = ["ContentStages", "StreamEdit"]

T = TypeVar("T")


class StreamEdit(Protocol):
    finished: bool
    """Set once the edit ended the stream (a block): the relay stops reading upstream."""

    async def feed(self, event: bytes) -> list[bytes]:
        """One upstream event in; the events that are now safe to send out."""

    async def flush(self) -> list[bytes]:
        """End of stream: the events still held back."""


class ContentStages(Protocol):
    async def on_request(self, call: Call) -> str | None:
        """Check/rewrite the request; return a refusal text to answer with instead of
        calling the upstream, or None to go on."""

    async def alongside(self, call: Call, work: Awaitable[T]) -> T | str:
        """Await the upstream `work` while input rails that run in parallel finish; if
        one blocks, cancel `work` and raise `ContentBlocked`, or return the refusal text
        (`on_block: refuse`). Without such rails: just `await work`."""

    async def on_response(self, call: Call, reply: UpstreamReply) -> UpstreamReply: ...

    def open_stream(self, call: Call) -> StreamEdit | None: ...

    def headers(self, call: Call) -> dict[str, str]:
        """Response headers summarising what the rails did (counts only)."""
