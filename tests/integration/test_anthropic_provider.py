"""AnthropicProvider against a fake Anthropic server on a loopback port.

The fake records what it received (path, headers, JSON body) and answers with canned
Messages JSON, real-format SSE (cut into odd-sized writes), or errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gateway.config import ProviderConfig
from gateway.errors import InvalidRequest, UpstreamError, UpstreamStatus
from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import UpstreamRequest
from gateway.sse import DONE, data_of, encode

KEY_ENV = "RAILGATE_TEST_ANTHROPIC_KEY"
KEY = "sk-ant-test-key"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeAnthropic:
    """Answers every request with `self.reply(request)`; keeps what it received."""

    reply: Callable[[web.Request], Any] = field(default=lambda request: web.json_response({}))
    received: list[Received] = field(default_factory=list)
    base_url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.received.append(Received(request.path, headers, await request.json()))
        response = self.reply(request)
        if asyncio.iscoroutine(response):
            response = await response
        assert isinstance(response, web.StreamResponse)
        return response


def ev(kind: str, **fields: Any) -> bytes:
    return encode(orjson.dumps({"type": kind, **fields}), event=kind)


MESSAGE = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-test-20250101",
    "content": [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Lagos"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 21, "output_tokens": 7},
}
START = ev(
    "message_start",
    message={
        **MESSAGE,
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 21, "output_tokens": 1},
    },
)
TEXT_EVENTS = [
    START,
    ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
    ev("ping"),
    ev("content_block_delta", index=0, delta={"type": "text_delta", "text": "Hello"}),
    ev("content_block_delta", index=0, delta={"type": "text_delta", "text": ", Ada"}),
    ev("content_block_stop", index=0),
    ev(
        "message_delta",
        delta={"stop_reason": "end_turn", "stop_sequence": None},
        usage={"output_tokens": 4},
    ),
    ev("message_stop"),
]
TOOL_EVENTS = [
    START,
    ev(
        "content_block_start",
        index=0,
        content_block={"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
    ),
    ev("content_block_delta", index=0, delta={"type": "input_json_delta", "partial_json": '{"ci'}),
    ev(
        "content_block_delta",
        index=0,
        delta={"type": "input_json_delta", "partial_json": 'ty":"Lagos"}'},
    ),
    ev("content_block_stop", index=0),
    ev(
        "message_delta",
        delta={"stop_reason": "tool_use", "stop_sequence": None},
        usage={"output_tokens": 12},
    ),
    ev("message_stop"),
]


def sse(events: list[bytes], *, hold: asyncio.Event | None = None) -> Callable[[web.Request], Any]:
    """A reply writing `events` in 37-byte pieces (events straddle writes); with `hold`,
    it stops after the first event until the event is set."""

    async def reply(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        if hold is not None:
            await response.write(events[0])
            await hold.wait()
            return response
        data = b"".join(events)
        for i in range(0, len(data), 37):
            await response.write(data[i : i + 37])
        await response.write_eof()
        return response

    return reply


def error_reply(
    status: int, kind: str, message: str, **headers: str
) -> Callable[[web.Request], Any]:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return lambda request: web.json_response(body, status=status, headers=headers)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    upstream = FakeAnthropic()
    app = web.Application()
    app.router.add_post("/v1/messages", upstream.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    upstream.base_url = f"http://{host}:{port}/v1"
    yield upstream
    await runner.cleanup()


@pytest.fixture
async def provider(
    fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AnthropicProvider]:
    monkeypatch.setenv(KEY_ENV, KEY)
    config = ProviderConfig(
        name="claude", type="anthropic", base_url=fake.base_url, api_key_env=KEY_ENV, timeout_s=5.0
    )
    instance = AnthropicProvider(config)
    await instance.start()
    yield instance
    await instance.close()


def chat(stream: bool = False, **extra: Any) -> UpstreamRequest:
    body = {
        "model": "claude-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Lagos?"},
        ],
        **extra,
    }
    return UpstreamRequest(
        "chat/completions", body, stream=stream, headers={"traceparent": "00-abc-def-01"}
    )


async def collect(provider: AnthropicProvider, request: UpstreamRequest) -> list[Any]:
    stream = await provider.open_stream(request)
    out: list[Any] = []
    async for event in stream:
        if event == DONE:
            out.append("[DONE]")
            continue
        data = data_of(event)
        assert data is not None
        payload = orjson.loads(data)
        if "error" not in payload:
            ChatCompletionChunk.model_validate(payload)
        out.append(payload)
    await stream.aclose()
    return out


async def test_complete(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.reply = lambda request: web.json_response(MESSAGE)
    reply = await provider.complete(chat(max_tokens=50, user="end-user-1"))

    (received,) = fake.received
    assert received.path == "/v1/messages"
    assert received.headers["x-api-key"] == KEY
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert received.headers["content-type"] == "application/json"
    assert received.headers["traceparent"] == "00-abc-def-01"
    assert "authorization" not in received.headers
    assert received.body == {
        "model": "claude-test",
        "max_tokens": 50,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Weather in Lagos?"}],
        "metadata": {"user_id": "end-user-1"},
    }

    assert reply.status == 200
    assert reply.content_type == "application/json"
    answer = orjson.loads(reply.content)
    ChatCompletion.model_validate(answer)
    assert answer["id"] == "msg_01"
    assert answer["model"] == "claude-test-20250101"
    assert isinstance(answer["created"], int)
    (choice,) = answer["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Lagos"}'},
        }
    ]
    assert answer["usage"] == {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28}


async def test_stream_text_with_usage(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.reply = sse(TEXT_EVENTS)
    out = await collect(provider, chat(stream=True, stream_options={"include_usage": True}))

    (received,) = fake.received
    assert received.body["stream"] is True
    assert "stream_options" not in received.body
    assert received.headers["accept"] == "text/event-stream"
    assert received.headers["x-api-key"] == KEY

    assert out[-1] == "[DONE]"
    usage_chunk = out[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 21, "completion_tokens": 4, "total_tokens": 25}
    chunks = out[:-2]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hello, Ada"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_stream_tool_call_without_usage(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.reply = sse(TOOL_EVENTS)
    out = await collect(provider, chat(stream=True))

    assert out[-1] == "[DONE]"
    assert all(c == "[DONE]" or c["choices"] for c in out)
    calls = [tc for c in out[:-1] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert "".join(tc["function"]["arguments"] for tc in calls) == '{"city":"Lagos"}'
    assert out[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_stream_error_event(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    overloaded = ev("error", error={"type": "overloaded_error", "message": "Overloaded"})
    fake.reply = sse([*TEXT_EVENTS[:4], overloaded])
    out = await collect(provider, chat(stream=True))

    assert out[-1] == {
        "error": {
            "message": "Overloaded",
            "type": "server_error",
            "param": None,
            "code": "overloaded",
        }
    }
    assert "[DONE]" not in out


async def test_stream_cut_short(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.reply = sse(TEXT_EVENTS[:4])
    out = await collect(provider, chat(stream=True))
    assert out[-1]["error"]["code"] == "upstream_error"
    assert "[DONE]" not in out


async def test_stream_aclose_drops_upstream(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    hold = asyncio.Event()
    fake.reply = sse(TEXT_EVENTS, hold=hold)
    stream = await provider.open_stream(chat(stream=True))
    events = aiter(stream)
    first = await anext(events)
    assert orjson.loads(data_of(first) or b"")["choices"][0]["delta"]["role"] == "assistant"
    await stream.aclose()
    await stream.aclose()  # safe to repeat
    with pytest.raises((StopAsyncIteration, UpstreamError)):
        await asyncio.wait_for(anext(events), 5)
    hold.set()


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_400_is_openai_shaped(
    fake: FakeAnthropic, provider: AnthropicProvider, stream: bool
) -> None:
    fake.reply = error_reply(400, "invalid_request_error", "max_tokens: too large")
    request = chat(stream=stream)
    with pytest.raises(UpstreamStatus) as info:
        if stream:
            await provider.open_stream(request)
        else:
            await provider.complete(request)
    assert info.value.status == 400
    assert info.value.content_type == "application/json"
    assert orjson.loads(info.value.content) == {
        "error": {
            "message": "max_tokens: too large",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_request",
        }
    }


async def test_upstream_429_keeps_retry_after(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.reply = error_reply(429, "rate_limit_error", "Rate limited", **{"retry-after": "17"})
    with pytest.raises(UpstreamStatus) as info:
        await provider.complete(chat())
    assert info.value.status == 429
    assert info.value.headers["retry-after"] == "17"
    assert orjson.loads(info.value.content)["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize("status", [500, 529])
@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_5xx_is_upstream_error(
    fake: FakeAnthropic, provider: AnthropicProvider, status: int, stream: bool
) -> None:
    fake.reply = error_reply(status, "overloaded_error" if status == 529 else "api_error", "Down")
    with pytest.raises(UpstreamError) as info:
        if stream:
            await provider.open_stream(chat(stream=True))
        else:
            await provider.complete(chat())
    assert info.value.status_code == 502


async def test_unreadable_answer(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.reply = lambda request: web.Response(body=b"not json", content_type="application/json")
    with pytest.raises(UpstreamError):
        await provider.complete(chat())


@pytest.mark.parametrize("endpoint", ["completions", "embeddings"])
async def test_unsupported_endpoint(
    fake: FakeAnthropic, provider: AnthropicProvider, endpoint: Any
) -> None:
    request = UpstreamRequest(endpoint, {"model": "claude-test", "input": "hi", "prompt": "hi"})
    with pytest.raises(InvalidRequest) as info:
        await provider.complete(request)
    assert info.value.code == "unsupported_endpoint"
    assert f"/v1/{endpoint}" in info.value.message
    assert fake.received == []


async def test_invalid_request_never_leaves(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    bad_call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
    request = chat(messages=[{"role": "assistant", "tool_calls": [bad_call]}])
    with pytest.raises(InvalidRequest):
        await provider.complete(request)
    with pytest.raises(InvalidRequest):
        await provider.open_stream(request)
    assert fake.received == []
