"""`type: mock`: deterministic answers, several-chunk streams, stable embeddings."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest

from gateway.config import ProviderConfig
from gateway.errors import InvalidRequest
from gateway.providers.base import Endpoint, UpstreamRequest
from gateway.providers.mock import MockProvider, answer_for
from gateway.sse import DONE, data_of


@pytest.fixture
def mock() -> MockProvider:
    return MockProvider(ProviderConfig(name="mock", type="mock"))


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "mock-1", "messages": [{"role": "user", "content": text}], **extra}


async def complete(provider: MockProvider, endpoint: Endpoint, body: dict[str, Any]) -> Any:
    reply = await provider.complete(UpstreamRequest(endpoint=endpoint, body=body))
    assert reply.status == 200 and reply.content_type == "application/json"
    return orjson.loads(reply.content)


async def stream(provider: MockProvider, endpoint: Endpoint, body: dict[str, Any]) -> list[bytes]:
    events = await provider.open_stream(UpstreamRequest(endpoint=endpoint, body=body, stream=True))
    out = [event async for event in events]
    await events.aclose()
    return out


async def test_same_prompt_same_answer(mock: MockProvider) -> None:
    first = await complete(mock, "chat/completions", chat("Hello Lagos"))
    second = await complete(mock, "chat/completions", chat("Hello Lagos"))
    other = await complete(mock, "chat/completions", chat("Hello Abuja"))
    text = first["choices"][0]["message"]["content"]
    assert text == "mock-1 heard: Hello Lagos"
    assert second["choices"][0]["message"]["content"] == text
    assert other["choices"][0]["message"]["content"] == "mock-1 heard: Hello Abuja"
    assert first["usage"] == second["usage"]
    usage = first["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert first["object"] == "chat.completion" and first["model"] == "mock-1"
    assert first["choices"][0]["finish_reason"] == "stop"


async def test_answers_the_last_user_message(mock: MockProvider) -> None:
    body = {
        "model": "mock-1",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "second"},
                    {"type": "image_url", "image_url": {"url": "data:,"}},
                    {"type": "text", "text": "question"},
                ],
            },
        ],
    }
    reply = await complete(mock, "chat/completions", body)
    assert reply["choices"][0]["message"]["content"] == "mock-1 heard: second question"
    assert answer_for(body)[0] == "mock-1 heard: second question"


async def test_completions_endpoint(mock: MockProvider) -> None:
    body = {"model": "mock-1", "prompt": "say done"}
    reply = await complete(mock, "completions", body)
    again = await complete(mock, "completions", body)
    assert reply["object"] == "text_completion"
    assert reply["choices"][0]["text"] == again["choices"][0]["text"] == "mock-1 heard: say done"


def payloads(events: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for event in events:
        data = data_of(event)
        assert data is not None
        if data != b"[DONE]":
            out.append(orjson.loads(data))
    return out


async def test_stream_arrives_in_several_chunks_and_ends_with_done(mock: MockProvider) -> None:
    events = await stream(mock, "chat/completions", chat("Hello there Lagos"))
    assert events[-1] == DONE
    assert all(e.endswith(b"\n\n") and e.count(b"\n\n") == 1 for e in events)
    chunks = payloads(events)
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks]
    content = [p for p in pieces if p]
    assert len(content) >= 3
    assert "".join(content) == "mock-1 heard: Hello there Lagos"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert all("usage" not in c for c in chunks)  # not asked for


async def test_stream_text_equals_non_stream_text(mock: MockProvider) -> None:
    body = chat("the same prompt twice")
    whole = (await complete(mock, "chat/completions", body))["choices"][0]["message"]["content"]
    chunks = payloads(await stream(mock, "chat/completions", body))
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == whole


async def test_usage_chunk_only_when_asked(mock: MockProvider) -> None:
    without = payloads(await stream(mock, "chat/completions", chat("x y z")))
    explicit_false = payloads(
        await stream(
            mock, "chat/completions", chat("x y z", stream_options={"include_usage": False})
        )
    )
    with_usage = payloads(
        await stream(
            mock, "chat/completions", chat("x y z", stream_options={"include_usage": True})
        )
    )
    assert all("usage" not in c for c in without + explicit_false)
    assert len(with_usage) == len(without) + 1
    last = with_usage[-1]
    assert last["choices"] == []
    plain = await complete(mock, "chat/completions", chat("x y z"))
    assert last["usage"] == plain["usage"]
    assert all("usage" not in c for c in with_usage[:-1])


async def test_completions_stream(mock: MockProvider) -> None:
    body = {
        "model": "mock-1",
        "prompt": "one two three",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = await stream(mock, "completions", body)
    assert events[-1] == DONE
    chunks = payloads(events)
    assert all(c["object"] == "text_completion" for c in chunks)
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == "mock-1 heard: one two three"
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["text"]]) >= 3
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


async def test_closed_stream_stops(mock: MockProvider) -> None:
    events = await mock.open_stream(
        UpstreamRequest(endpoint="chat/completions", body=chat("a b c d e f"), stream=True)
    )
    seen = []
    async for event in events:
        seen.append(event)
        await events.aclose()
    assert len(seen) == 1


async def test_embeddings_are_stable_and_sized(mock: MockProvider) -> None:
    one = await complete(mock, "embeddings", {"model": "mock-1", "input": ["alpha", "beta"]})
    two = await complete(mock, "embeddings", {"model": "mock-1", "input": ["alpha", "beta"]})
    assert one == two
    vectors = [d["embedding"] for d in one["data"]]
    assert [d["index"] for d in one["data"]] == [0, 1]
    assert all(len(v) == 16 for v in vectors)  # default size
    assert vectors[0] != vectors[1]
    assert all(-1.0 <= x <= 1.0 for v in vectors for x in v)
    single = await complete(mock, "embeddings", {"model": "mock-1", "input": "alpha"})
    assert single["data"][0]["embedding"] == vectors[0]
    assert one["usage"]["prompt_tokens"] == one["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("dims", [1, 3, 16, 17, 100, 4096])
async def test_embedding_dimensions(mock: MockProvider, dims: int) -> None:
    body = {"model": "mock-1", "input": "alpha", "dimensions": dims}
    reply = await complete(mock, "embeddings", body)
    vector = reply["data"][0]["embedding"]
    assert len(vector) == dims
    assert (await complete(mock, "embeddings", body))["data"][0]["embedding"] == vector
    full = (
        await complete(
            mock, "embeddings", {"model": "mock-1", "input": "alpha", "dimensions": 4096}
        )
    )["data"][0]["embedding"]
    assert vector == full[:dims]  # a prefix of one stable sequence


async def test_token_array_inputs(mock: MockProvider) -> None:
    flat = await complete(mock, "embeddings", {"model": "mock-1", "input": [1, 2, 3]})
    nested = await complete(mock, "embeddings", {"model": "mock-1", "input": [[1, 2, 3], [4]]})
    assert len(flat["data"]) == 1 and len(nested["data"]) == 2
    assert flat["data"][0]["embedding"] == nested["data"][0]["embedding"]


@pytest.mark.parametrize("dims", [-1, 4097, 10**9, "8", 1.5])
async def test_bad_dimensions_are_invalid_requests(mock: MockProvider, dims: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        await mock.complete(
            UpstreamRequest(
                endpoint="embeddings", body={"model": "mock-1", "input": "x", "dimensions": dims}
            )
        )
    assert info.value.param == "dimensions" and info.value.status_code == 400


async def test_zero_dimensions_is_an_invalid_request(mock: MockProvider) -> None:
    with pytest.raises(InvalidRequest):
        await mock.complete(
            UpstreamRequest(
                endpoint="embeddings", body={"model": "mock-1", "input": "x", "dimensions": 0}
            )
        )


@pytest.mark.parametrize("text", [5, None, {"a": 1}])
async def test_non_string_text_part_does_not_crash(mock: MockProvider, text: Any) -> None:
    body = {
        "model": "mock-1",
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }
    with contextlib.suppress(InvalidRequest):  # a clear 400 is fine; a TypeError (→ 500) is not
        await mock.complete(UpstreamRequest(endpoint="chat/completions", body=body))
