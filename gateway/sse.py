"""Server-sent events as bytes: split a byte stream into events, read an event's data.

No policy here: `streaming.py` decides what to do with each event.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

__all__ = ["DONE", "data_of", "encode", "split_events"]

DONE = b"data: [DONE]\n\n"


async def split_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Re-cut arbitrary byte chunks into whole events, each ending in one blank line (`\\n\\n`).

    CRLF line endings are normalised; a trailing event without its blank line is still yielded.
    """
    buffer = b""
    async for chunk in chunks:
        # A CR that ended the previous chunk may pair with an LF that starts this one.
        pending_cr = buffer.endswith(b"\r")
        buffer += chunk
        if pending_cr or b"\r" in chunk:
            buffer = buffer.replace(b"\r\n", b"\n")
        while True:
            cut = buffer.find(b"\n\n")
            if cut < 0:
                break
            event, buffer = buffer[: cut + 2], buffer[cut + 2 :]
            if event.strip():
                yield event
    if buffer.strip():
        yield buffer.rstrip(b"\n") + b"\n\n"


def data_of(event: bytes) -> bytes | None:
    """The joined `data:` payload of one event, or None for comments and data-less events."""
    if event.startswith(b"data: ") and event.count(b"\n") == 2:
        return event[6:-2]
    parts = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(parts) if parts else None


def encode(data: bytes, event: str | None = None) -> bytes:
    """One event carrying `data` (a single line, e.g. compact JSON)."""
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + data + b"\n\n"
