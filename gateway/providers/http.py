"""The upstream HTTP client: one shared `aiohttp.ClientSession` per provider.

aiohttp is the hot-path transport because it measured several times cheaper per
request than httpx's default transport on these machines (DESIGN.md, "Performance
facts"). It stays behind this module: providers call `post()` and get bytes or events.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable

import aiohttp

from gateway.config import ProviderConfig
from gateway.errors import UpstreamError, UpstreamStatus
from gateway.providers.base import HeaderObserver, map_upstream_errors
from gateway.sse import split_events

__all__ = ["HttpUpstream", "SseStream"]

# Response headers worth handing to the client when the upstream refuses a request.
_PASS_HEADERS = ("retry-after", "retry-after-ms")


class HttpUpstream:
    """A connection pool to one base URL, created in `start()` (inside the event loop)."""

    @classmethod
    def for_provider(
        cls,
        config: ProviderConfig,
        auth: Callable[[str], dict[str, str]],
        *,
        base_url: str = "",
        headers: dict[str, str] | None = None,
    ) -> HttpUpstream:
        """The pool for `config`. `auth(key)` gives the headers that carry the API key read
        from `config.api_key_env` (none without a key); `headers` go with every request."""
        key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        return cls(
            config.name,
            config.base_url or base_url,
            {**(headers or {}), **(auth(key) if key else {})},
            config.timeout_s,
            config.max_connections,
        )

    def __init__(
        self,
        provider: str,
        base_url: str,
        headers: dict[str, str],
        timeout_s: float,
        max_connections: int,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._headers = {"content-type": "application/json", **headers}
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=min(timeout_s, 10.0), sock_read=timeout_s
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self.observer: HeaderObserver | None = None
        """Sees every answer's status and headers (set by the limiter for pacing)."""

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, keepalive_timeout=30, enable_cleanup_closed=True
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers=self._headers,
            skip_auto_headers=("User-Agent",),
            raise_for_status=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise UpstreamError(f"Provider {self.provider!r} is not started.")
        return self._session

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str]:
        """POST and read the whole answer; raise `UpstreamStatus` / `UpstreamError` on failure."""
        with map_upstream_errors(self.provider):
            async with self.session.post(self.base_url + path, data=body, headers=headers) as resp:
                if self.observer is not None:
                    self.observer(resp.status, resp.headers)
                content = await resp.read()
                content_type = resp.headers.get("content-type", "application/json")
                _raise_for_status(self.provider, resp, content)
                return resp.status, content, content_type

    async def open_sse(self, path: str, body: bytes, headers: dict[str, str]) -> SseStream:
        """POST and return the event stream once 2xx headers arrived."""
        with map_upstream_errors(self.provider):
            resp = await self.session.post(self.base_url + path, data=body, headers=headers)
            if self.observer is not None:
                self.observer(resp.status, resp.headers)
            if resp.status >= 300:
                try:
                    content = await resp.read()
                finally:
                    resp.release()
                _raise_for_status(self.provider, resp, content)
            if not resp.headers.get("content-type", "").startswith("text/event-stream"):
                resp.close()
                raise UpstreamError(f"Provider {self.provider!r} did not answer with a stream.")
        return SseStream(self.provider, resp)


def _raise_for_status(provider: str, resp: aiohttp.ClientResponse, content: bytes) -> None:
    if resp.status < 300:
        return
    if 400 <= resp.status < 500:
        error = UpstreamStatus(
            resp.status, content, resp.headers.get("content-type", "application/json")
        )
        error.headers.update({h: resp.headers[h] for h in _PASS_HEADERS if h in resp.headers})
        raise error
    raise UpstreamError(f"Provider {provider!r} answered {resp.status}.")


class SseStream:
    """Events of one streamed upstream answer; closing it drops the connection."""

    def __init__(self, provider: str, response: aiohttp.ClientResponse) -> None:
        self.provider = provider
        self.response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            with map_upstream_errors(self.provider):
                async for event in split_events(self.response.content.iter_any()):
                    yield event
        finally:
            self.response.close()

    async def aclose(self) -> None:
        self.response.close()
