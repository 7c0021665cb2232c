"""Content seam: where the rails see what goes to the provider and what comes back.

`on_request` runs after admission and before the upstream call, and may rewrite
`call.request.body` or raise `ContentBlocked`. `on_response` sees a complete answer
before the client does. `open_stream` returns a per-stream `StreamEdit` (or None to
relay untouched) that sees each SSE event in order and may hold back, rewrite or end
the stream. The rails pipeline arrives with the rails work; `NoRails` passes all.
"""

from __future__ import annotations

from typing import Protocol

from gateway.call import Call
from gateway.providers.base import UpstreamReply

__all__ = ["ContentStages", "NoRails", "StreamEdit"]


class StreamEdit(Protocol):
    async def feed(self, event: bytes) -> list[bytes]:
        """One upstream event in; the events that are now safe to send out."""

    async def flush(self) -> list[bytes]:
        """End of stream: the events still held back."""


class ContentStages(Protocol):
    async def on_request(self, call: Call) -> None: ...

    async def on_response(self, call: Call, reply: UpstreamReply) -> UpstreamReply: ...

    def open_stream(self, call: Call) -> StreamEdit | None: ...


class NoRails:
    async def on_request(self, call: Call) -> None:
        return None

    async def on_response(self, call: Call, reply: UpstreamReply) -> UpstreamReply:
        return reply

    def open_stream(self, call: Call) -> StreamEdit | None:
        return None
