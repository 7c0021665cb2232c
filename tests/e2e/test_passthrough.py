"""Pass-through fidelity through the official SDK and raw httpx, against a real upstream."""

from __future__ import annotations

import httpx
import orjson
import pytest
from openai import AsyncOpenAI

from tests.conftest import KEY_ACME, UPSTREAM_KEY


@pytest.fixture
async def client(gateway):
    async with AsyncOpenAI(base_url=gateway.v1, api_key=KEY_ACME, max_retries=0) as sdk:
        yield sdk


async def test_unknown_fields_pass_both_ways(gateway, fresh_upstream):
    body = {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                ],
            },
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}},
        },
        "logprobs": True,
        "top_logprobs": 2,
        "n": 2,
        "seed": 7,
        "x_vendor_option": {"deep": [1, {"a": None}], "f": 0.5},
    }
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            gateway.v1 + "/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {KEY_ACME}"},
        )
    assert resp.status_code == 200
    sent = fresh_upstream.last()
    assert sent.path == "/v1/chat/completions"
    expected = {**body, "model": "upstream-gpt"}
    assert sent.json == expected
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert KEY_ACME not in str(sent.headers)
    answer = resp.json()
    assert answer["x_upstream_extra"] == {"nested": [1, 2, 3]}
    assert answer["system_fingerprint"] == "fp_fake"
    assert answer["usage"] == {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}


async def test_response_bytes_are_the_upstream_bytes(gateway, fresh_upstream):
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            gateway.v1 + "/chat/completions",
            json={"model": "tools", "messages": [{"role": "user", "content": "x"}]},
            headers={"x-api-key": KEY_ACME},
        )
    assert resp.status_code == 200
    decoded = orjson.loads(resp.content)
    assert orjson.dumps(decoded) == resp.content  # compact, untouched upstream serialization
    assert (
        decoded["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        == '{"city":"Lagos"}'
    )


async def test_tool_calls_through_sdk(client, fresh_upstream):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "sunny"},
    ]
    reply = await client.chat.completions.create(
        model="tools", messages=messages, tools=tools, tool_choice="auto", parallel_tool_calls=False
    )
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and call.function.arguments == '{"city":"Lagos"}'
    assert reply.choices[0].finish_reason == "tool_calls"
    sent = fresh_upstream.last().json
    assert sent["tools"] == tools and sent["messages"] == messages
    assert sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is False


async def test_stream_chunk_order_and_usage_added_then_stripped(gateway, client, fresh_upstream):
    stream = await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "count"}], stream=True
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)  # client did not ask for usage
    assert all(c.choices for c in chunks)  # the extra usage chunk was removed
    sent = fresh_upstream.last().json
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    record = gateway.sink.wait_for(stream.response.headers["x-request-id"])
    assert (record.prompt_tokens, record.completion_tokens) == (11, 4)
    assert record.stream and record.status == 200 and record.tenant_id == "acme"
    assert record.cost_micro_usd == round(11 * 2.5 + 4 * 10.0)


async def test_stream_usage_kept_when_client_asks(client, fresh_upstream):
    stream = await client.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == 15
    assert fresh_upstream.last().json["stream_options"] == {"include_usage": True}


async def test_stream_is_relayed_byte_for_byte(gateway, fresh_upstream):
    async with (
        httpx.AsyncClient() as http,
        http.stream(
            "POST",
            gateway.v1 + "/chat/completions",
            headers={"authorization": f"Bearer {KEY_ACME}"},
            json={
                "model": "tools",
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": "x"}],
            },
        ) as resp,
    ):
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = b"".join([part async for part in resp.aiter_bytes()])
    events = [e for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    payloads = [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    args = "".join(
        p["choices"][0]["delta"].get("tool_calls", [{}])[0].get("function", {}).get("arguments", "")
        for p in payloads
        if p["choices"]
    )
    assert args == '{"city":"Lagos"}'
    assert all(p["x_upstream_extra"] == {"k": 1} for p in payloads)
    assert payloads[-1]["usage"]["total_tokens"] == 15


async def test_completions_and_embeddings(gateway, client, fresh_upstream):
    completion = await client.completions.create(model="gpt-test", prompt="say done", max_tokens=5)
    assert completion.choices[0].text == "done"
    assert fresh_upstream.last().path == "/v1/completions"
    emb = await client.embeddings.create(
        model="gpt-test", input=["a", "b"], encoding_format="float"
    )
    assert emb.data[0].embedding == [0.25, -0.5]
    sent = fresh_upstream.last()
    assert sent.path == "/v1/embeddings" and sent.json["input"] == ["a", "b"]
    assert sent.json["model"] == "upstream-gpt"


async def test_request_id_echoed_and_trace_continued_upstream(gateway, fresh_upstream):
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            gateway.v1 + "/chat/completions",
            json={"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]},
            headers={
                "authorization": f"Bearer {KEY_ACME}",
                "x-request-id": "req-123",
                "traceparent": parent,
                "tracestate": "vendor=1",
            },
        )
        generated = await http.post(
            gateway.v1 + "/chat/completions",
            json={"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]},
            headers={"authorization": f"Bearer {KEY_ACME}"},
        )
    assert resp.headers["x-request-id"] == "req-123"
    sent = fresh_upstream.received[0].headers
    # The same trace, sampled, with the gateway's own upstream span as the parent.
    version, trace_id, parent_id, flags = sent["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", parent.split("-")[1], "01")
    assert len(parent_id) == 16 and parent_id not in (parent.split("-")[2], "0" * 16)
    assert sent["tracestate"] == "vendor=1"
    assert sent["x-request-id"] == "req-123"
    new_id = generated.headers["x-request-id"]
    assert len(new_id) == 32 and new_id != "req-123"
    fresh = fresh_upstream.received[1].headers["traceparent"].split("-")
    assert fresh[0] == "00" and len(fresh[1]) == 32 and fresh[1] != trace_id and fresh[3] == "01"


async def test_mock_model_answers_from_prompt(client):
    reply = await client.chat.completions.create(
        model="mock-1", messages=[{"role": "user", "content": "Hello Lagos"}]
    )
    assert reply.choices[0].message.content == "mock-1 heard: Hello Lagos"
    assert reply.usage.total_tokens > 0
    stream = await client.chat.completions.create(
        model="mock-1", messages=[{"role": "user", "content": "Hello Lagos"}], stream=True
    )
    pieces = [
        c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) >= 3 and "".join(pieces) == "mock-1 heard: Hello Lagos"


async def test_models_list_only_allowed(gateway):
    from tests.conftest import KEY_LIMITED

    async with (
        AsyncOpenAI(base_url=gateway.v1, api_key=KEY_ACME) as full,
        AsyncOpenAI(base_url=gateway.v1, api_key=KEY_LIMITED) as limited,
    ):
        names = {m.id async for m in full.models.list()}
        assert {"mock-1", "gpt-test", "tools"} <= names
        assert [m.id async for m in limited.models.list()] == ["mock-1"]
        assert (await limited.models.retrieve("mock-1")).id == "mock-1"
