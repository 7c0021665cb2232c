"""`type: openai`: any OpenAI-compatible server (OpenAI, Azure-style, vLLM, Ollama, Groq …).

The request body goes upstream as the client sent it (model renamed, usage asked for
on streams); the answer comes back byte for byte.
"""

from __future__ import annotations

import orjson

from gateway.config import ProviderConfig
from gateway.providers.base import EventStream, HeaderObserver, UpstreamReply, UpstreamRequest
from gateway.providers.http import HttpUpstream

__all__ = ["OpenAIProvider"]


class OpenAIProvider:
    def __init__(self, config: ProviderConfig) -> None:
        self.name = config.name
        self._http = HttpUpstream.for_provider(
            config, lambda key: {"authorization": f"Bearer {key}"}
        )

    async def start(self) -> None:
        await self._http.start()

    async def close(self) -> None:
        await self._http.close()

    def watch(self, observer: HeaderObserver) -> None:
        self._http.observer = observer

    async def complete(self, request: UpstreamRequest) -> UpstreamReply:
        status, content, content_type = await self._http.post(
            "/" + request.endpoint, orjson.dumps(request.body), request.headers
        )
        return UpstreamReply(content=content, status=status, content_type=content_type)

    async def open_stream(self, request: UpstreamRequest) -> EventStream:
        headers = {**request.headers, "accept": "text/event-stream"}
        return await self._http.open_sse(
            "/" + request.endpoint, orjson.dumps(request.body), headers
        )
