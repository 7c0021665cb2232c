"""The provider interface: how the proxy talks to one upstream, whatever its protocol.

A provider takes an OpenAI-shaped request (`UpstreamRequest`) and gives back an
OpenAI-shaped answer: `complete()` for a JSON reply, `open_stream()` for a stream of
server-sent events. Adapters for other protocols (Anthropic) translate both ways, so
the proxy, the rails and usage accounting only ever see the OpenAI wire format.

Errors: an upstream 4xx is raised as `UpstreamStatus` (passed to the client as it
came); 5xx and unusable answers as `UpstreamError` (502); time-outs as
`UpstreamTimeout` (504). `map_upstream_errors()` is the one place that translates
transport exceptions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import aiohttp

from gateway.errors import UpstreamError, UpstreamTimeout

__all__ = [
    "Endpoint",
    "EventStream",
    "HeaderObserver",
    "Provider",
    "UpstreamReply",
    "UpstreamRequest",
    "map_upstream_errors",
]

Endpoint = Literal["chat/completions", "completions", "embeddings"]

HeaderObserver = Callable[[int, Mapping[str, str]], None]
"""Sees the status and headers of every upstream answer (e.g. `x-ratelimit-remaining-*`).
Called on the request path: it must return at once and never raise."""


@dataclass(slots=True)
class UpstreamRequest:
    """One call to make upstream. `body` is OpenAI-shaped with `model` already the upstream name."""

    endpoint: Endpoint
    body: dict[str, Any]
    stream: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    """Trace headers to forward (`traceparent`, `tracestate`, `x-request-id`)."""


@dataclass(slots=True)
class UpstreamReply:
    """A complete (non-streamed) OpenAI-shaped answer: the exact bytes for the client."""

    content: bytes
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class EventStream(Protocol):
    """An open upstream stream. Iterating yields complete OpenAI SSE events
    (`b"data: {...}\\n\\n"`, `b"data: [DONE]\\n\\n"`, comments); `aclose()` drops the
    upstream connection and is safe to call at any time, more than once."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Provider(Protocol):
    """One upstream deployment. Built once at start; `start()`/`close()` run in the lifespan."""

    name: str

    async def start(self) -> None:
        """Open shared resources (the connection pool). Runs inside the event loop."""

    async def close(self) -> None:
        """Close the connection pool."""

    def watch(self, observer: HeaderObserver) -> None:
        """Call `observer` with every upstream answer's status and headers."""

    async def complete(self, request: UpstreamRequest) -> UpstreamReply:
        """Send a non-streamed request and return the whole answer."""

    async def open_stream(self, request: UpstreamRequest) -> EventStream:
        """Send a streamed request; return once the upstream has accepted it (2xx headers),
        so a refusal can still become an HTTP error instead of a broken stream."""


@contextmanager
def map_upstream_errors(provider: str) -> Iterator[None]:
    """Translate transport exceptions into gateway errors, the most specific first."""
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout(f"Provider {provider!r} timed out.") from exc
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamError(f"Provider {provider!r} is unreachable.") from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
        raise UpstreamError(f"Provider {provider!r} closed the connection.") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamError(f"Provider {provider!r} failed ({type(exc).__name__}).") from exc
