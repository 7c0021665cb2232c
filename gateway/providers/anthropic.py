"""`type: anthropic`: the Anthropic Messages API behind the gateway's OpenAI wire format.

Only `chat/completions` is served. The OpenAI request is translated into a
`POST {base_url}/messages` body, and the answer back into a `chat.completion` or into
`chat.completion.chunk` events (`anthropic_wire` and `anthropic_reply` hold the translation). Upstream 4xx
answers keep their status and `Retry-After`, with the body in OpenAI's error shape;
5xx (including 529 overloaded) become `UpstreamError`, as for any provider.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import contextmanager

import orjson

from gateway.config import ProviderConfig
from gateway.errors import InvalidRequest, UpstreamError, UpstreamStatus
from gateway.providers.anthropic_reply import StreamTranslator, from_message, openai_error_body
from gateway.providers.anthropic_wire import ANTHROPIC_VERSION, to_messages_request
from gateway.providers.base import EventStream, HeaderObserver, UpstreamReply, UpstreamRequest
from gateway.providers.http import HttpUpstream, SseStream

__all__ = ["DEFAULT_BASE_URL", "AnthropicProvider", "AnthropicStream"]

DEFAULT_BASE_URL = "https://api.anthropic.com/v1"


class AnthropicProvider:
    """One Anthropic deployment; the key comes from the variable named by `api_key_env`."""

    def __init__(self, config: ProviderConfig) -> None:
        self.name = config.name
        self._http = HttpUpstream.for_provider(
            config,
            lambda key: {"x-api-key": key},
            base_url=DEFAULT_BASE_URL,
            headers={"anthropic-version": ANTHROPIC_VERSION},
        )

    async def start(self) -> None:
        await self._http.start()

    async def close(self) -> None:
        await self._http.close()

    def watch(self, observer: HeaderObserver) -> None:
        self._http.observer = observer

    async def complete(self, request: UpstreamRequest) -> UpstreamReply:
        body = self._translate(request, stream=False)
        created = int(time.time())
        with _openai_errors():
            _, content, _ = await self._http.post("/messages", body, request.headers)
        try:
            message = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"Provider {self.name!r} answered something unreadable.") from exc
        return UpstreamReply(content=orjson.dumps(from_message(message, created=created)))

    async def open_stream(self, request: UpstreamRequest) -> EventStream:
        body = self._translate(request, stream=True)
        options = request.body.get("stream_options")
        translator = StreamTranslator(
            model=str(request.body.get("model", "")),
            created=int(time.time()),
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        )
        headers = {**request.headers, "accept": "text/event-stream"}
        with _openai_errors():
            upstream = await self._http.open_sse("/messages", body, headers)
        return AnthropicStream(upstream, translator)

    def _translate(self, request: UpstreamRequest, *, stream: bool) -> bytes:
        if request.endpoint != "chat/completions":
            raise InvalidRequest(
                f"This model's provider does not support the /v1/{request.endpoint} endpoint.",
                code="unsupported_endpoint",
            )
        return orjson.dumps(to_messages_request(request.body, stream=stream))


@contextmanager
def _openai_errors() -> Iterator[None]:
    """Re-raise an upstream refusal (4xx) with its body in OpenAI's error shape."""
    try:
        yield
    except UpstreamStatus as exc:
        converted = UpstreamStatus(
            exc.status, openai_error_body(exc.content, exc.status), "application/json"
        )
        converted.headers.update(exc.headers)
        raise converted from exc


class AnthropicStream:
    """An open Anthropic stream, read as OpenAI chunk events (see `StreamTranslator`)."""

    def __init__(self, upstream: SseStream, translator: StreamTranslator) -> None:
        self._upstream = upstream
        self._translator = translator

    async def __aiter__(self) -> AsyncIterator[bytes]:
        events = aiter(self._upstream)
        try:
            async for event in events:
                for out in self._translator.feed(event):
                    yield out
                if self._translator.finished:
                    return
            for out in self._translator.close():
                yield out
        finally:
            if isinstance(events, AsyncGenerator):
                await events.aclose()
            await self._upstream.aclose()

    async def aclose(self) -> None:
        await self._upstream.aclose()
