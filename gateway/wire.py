"""Raw ASGI in and out for the proxy routes, the hot path.

The proxy routes are Litestar ASGI route handlers: Litestar still routes them and
renders their errors, but the body is read and the answer written here directly,
without building framework request and response objects (measured: about a tenth of
a request's CPU time, see bench/RESULTS.md).

`send_events()` relays a stream event by event; if the client disconnects, the event
iterator is closed (which closes the upstream request) and nothing more is sent.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from litestar.types import Receive, Scope, Send

from gateway.disconnect import run_until_disconnect
from gateway.errors import ClientDisconnected, PayloadTooLarge

__all__ = ["headers_of", "read_body", "send_body", "send_events"]

_TOO_LARGE = "Request body is too large."


def headers_of(scope: Scope) -> dict[str, str]:
    """Request headers as a plain dict (ASGI names are lower-case; the last one wins)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


async def read_body(headers: dict[str, str], receive: Receive, limit: int) -> bytes:
    """The whole request body; `PayloadTooLarge` as soon as it exceeds `limit` bytes."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(_TOO_LARGE)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("Client closed the connection.")
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment,unused-ignore]
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(_TOO_LARGE)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _raw_headers(media_type: str, headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    raw = [(b"content-type", media_type.encode("latin-1"))]
    raw.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
    return raw


async def send_body(
    send: Send, status: int, media_type: str, headers: dict[str, str], body: bytes
) -> None:
    raw = _raw_headers(media_type, headers)
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_events(
    receive: Receive,
    send: Send,
    status: int,
    media_type: str,
    headers: dict[str, str],
    events: AsyncGenerator[bytes, None],
) -> None:
    """Send each event as it comes; stop quietly if the client goes away."""

    async def relay() -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": _raw_headers(media_type, headers),
            }
        )
        async for event in events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    try:
        await run_until_disconnect(receive, relay())
    except (ClientDisconnected, OSError):
        pass  # nobody left to tell; the relay records the call as disconnected
    finally:
        await events.aclose()
