"""An OpenAI client calls a model whose provider speaks the Anthropic Messages API."""

from __future__ import annotations

import pytest
from openai import AsyncOpenAI, BadRequestError

from tests.conftest import KEY_ACME, UPSTREAM_KEY


@pytest.fixture
async def client(gateway):
    async with AsyncOpenAI(base_url=gateway.v1, api_key=KEY_ACME, max_retries=0) as sdk:
        yield sdk


async def test_chat_is_translated_both_ways(gateway, client, fresh_upstream):
    raw = await client.chat.completions.with_raw_response.create(
        model="claude-test",
        messages=[
            {"role": "system", "content": "answer in French"},
            {"role": "user", "content": "hello"},
        ],
        max_tokens=50,
        user="end-user-7",
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "bonjour"
    assert reply.choices[0].finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (9, 2)
    sent = fresh_upstream.last()
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == UPSTREAM_KEY and "authorization" not in sent.headers
    assert sent.headers["anthropic-version"]
    assert sent.json["model"] == "claude-upstream"
    assert sent.json["system"] == "answer in French"
    assert sent.json["messages"] == [{"role": "user", "content": "hello"}]
    assert sent.json["max_tokens"] == 50
    assert sent.json["metadata"] == {"user_id": "end-user-7"}
    record = gateway.sink.wait_for(raw.headers["x-request-id"])
    assert record.provider == "anth" and record.user == "end-user-7"
    assert record.cost_micro_usd == 9 * 3 + 2 * 15


async def test_stream_is_translated_and_usage_recorded(gateway, client, fresh_upstream):
    stream = await client.chat.completions.create(
        model="claude-test",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "bonjour"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    assert fresh_upstream.last().json["stream"] is True
    record = gateway.sink.wait_for(stream.response.headers["x-request-id"])
    assert (record.prompt_tokens, record.completion_tokens) == (9, 2)
    assert record.cost_micro_usd == 9 * 3 + 2 * 15


async def test_endpoint_anthropic_cannot_serve_is_a_clear_400(client, fresh_upstream):
    with pytest.raises(BadRequestError) as info:
        await client.embeddings.create(model="claude-test", input="x")
    assert info.value.code == "unsupported_endpoint"
    assert fresh_upstream.received == []
