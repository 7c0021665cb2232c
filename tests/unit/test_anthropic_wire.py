"""Pure OpenAI ⇄ Anthropic translation: requests, answers, stream events, errors.

Anthropic fixtures are checked against the `anthropic` SDK's models and our output
against the `openai` SDK's models, so field names follow the real APIs.
"""

from __future__ import annotations

from typing import Any

import orjson
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gateway.errors import InvalidRequest, UpstreamError
from gateway.providers.anthropic_reply import (
    StreamTranslator,
    finish_reason,
    from_message,
    openai_error_body,
)
from gateway.providers.anthropic_wire import DEFAULT_MAX_TOKENS, to_messages_request
from gateway.sse import DONE, data_of, encode

_EVENT = pydantic.TypeAdapter(RawMessageStreamEvent)
PNG = "iVBORw0KGgo="


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "claude-test", "messages": list(messages), **extra}


def anthropic(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-test",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": list(messages),
        **extra,
    }


CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Lagos"}'},
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
WEATHER_SPEC = {
    "name": "get_weather",
    "description": "Weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}

# ---------------------------------------------------------------- requests


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(chat(user("hi")), anthropic(user("hi")), id="minimal"),
        pytest.param(
            chat(
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                user("hi"),
            ),
            anthropic(user("hi"), system="Be brief.\n\nUse French."),
            id="system-and-developer-joined",
        ),
        pytest.param(
            chat(
                user("hi"),
                max_tokens=10,
                max_completion_tokens=20,
                temperature=0.2,
                top_p=0.9,
                stop="END",
                user="u-42",
                seed=7,
                n=1,
                stream_options={"include_usage": True},
                response_format={"type": "text"},
            ),
            anthropic(
                user("hi"),
                max_tokens=20,
                temperature=0.2,
                top_p=0.9,
                stop_sequences=["END"],
                metadata={"user_id": "u-42"},
            ),
            id="sampling-and-metadata",
        ),
        pytest.param(
            chat(user("hi"), max_tokens=5, stop=["a", "b"]),
            anthropic(user("hi"), max_tokens=5, stop_sequences=["a", "b"]),
            id="stop-list",
        ),
        pytest.param(
            chat(
                user(
                    [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}},
                    ]
                )
            ),
            anthropic(
                user(
                    [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://x.test/cat.jpg"},
                        },
                    ]
                )
            ),
            id="images",
        ),
        pytest.param(
            chat(
                user("Weather in Lagos and Abuja?"),
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        CALL,
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "31C"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "29C"}],
                },
                user("Thanks"),
            ),
            anthropic(
                user("Weather in Lagos and Abuja?"),
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "call_1",
                            "name": "get_weather",
                            "input": {"city": "Lagos"},
                        },
                        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
                    ],
                },
                user(
                    [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "31C"},
                        {"type": "tool_result", "tool_use_id": "call_2", "content": "29C"},
                        {"type": "text", "text": "Thanks"},
                    ]
                ),
            ),
            id="tool-calls-and-merged-results",
        ),
        pytest.param(
            chat(
                user("hi"),
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "31C"},
            ),
            anthropic(
                user("hi"),
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "call_1",
                            "name": "get_weather",
                            "input": {"city": "Lagos"},
                        }
                    ],
                },
                user([{"type": "tool_result", "tool_use_id": "call_1", "content": "31C"}]),
            ),
            id="tool-call-without-text",
        ),
        pytest.param(
            chat(
                user("a"),
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Sure"}]},
                user("b"),
            ),
            anthropic(user("a"), {"role": "assistant", "content": "Sure"}, user("b")),
            id="assistant-refusal-and-empty-turn-dropped",
        ),
        pytest.param(
            chat(user("hi"), tools=[WEATHER_TOOL]),
            anthropic(user("hi"), tools=[WEATHER_SPEC]),
            id="tools-auto",
        ),
        pytest.param(
            chat(
                user("hi"),
                tools=[{"type": "function", "function": {"name": "now"}}],
                tool_choice="required",
                parallel_tool_calls=False,
            ),
            anthropic(
                user("hi"),
                tools=[{"name": "now", "input_schema": {"type": "object", "properties": {}}}],
                tool_choice={"type": "any", "disable_parallel_tool_use": True},
            ),
            id="tools-required-no-parallel",
        ),
        pytest.param(
            chat(
                user("hi"),
                tools=[WEATHER_TOOL],
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
            ),
            anthropic(
                user("hi"),
                tools=[WEATHER_SPEC],
                tool_choice={"type": "tool", "name": "get_weather"},
            ),
            id="tools-named",
        ),
        pytest.param(
            chat(user("hi"), tools=[WEATHER_TOOL], tool_choice="none", parallel_tool_calls=False),
            anthropic(user("hi"), tools=[WEATHER_SPEC], tool_choice={"type": "none"}),
            id="tools-none",
        ),
        pytest.param(
            chat(user("hi"), tool_choice="required"),
            anthropic(user("hi")),
            id="tool-choice-without-tools-dropped",
        ),
    ],
)
def test_request(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert to_messages_request(body) == expected


def test_request_stream_flag() -> None:
    assert to_messages_request(chat(user("hi")), stream=True)["stream"] is True


SECRET_ARGS = '{"card": "4111 1111 1111 1111"'  # truncated JSON with sensitive content


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param(chat(), "messages", id="no-messages"),
        pytest.param({"model": "m", "messages": "hi"}, "messages", id="messages-not-list"),
        pytest.param({"model": "m", "messages": ["hi"]}, "messages[0]", id="message-not-object"),
        pytest.param(chat(user("hi"), max_tokens=0), "max_tokens", id="max-tokens-zero"),
        pytest.param(
            chat(user("hi"), max_completion_tokens="9"),
            "max_completion_tokens",
            id="max-tokens-str",
        ),
        pytest.param(chat(user("hi"), max_tokens=True), "max_tokens", id="max-tokens-bool"),
        pytest.param(chat(user("hi"), n=2), "n", id="n"),
        pytest.param(
            chat(user("hi"), response_format={"type": "json_object"}),
            "response_format",
            id="response-format",
        ),
        pytest.param(
            chat(user("hi"), functions=[{"name": "f", "parameters": {}}]),
            "functions",
            id="legacy-functions",
        ),
        pytest.param(
            chat(user([{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}])),
            "messages[0].content[0]",
            id="audio-part",
        ),
        pytest.param(
            chat(user([{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}}])),
            "messages[0].content[0]",
            id="image-type",
        ),
        pytest.param(
            chat(user([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}])),
            "messages[0].content[0]",
            id="image-base64",
        ),
        pytest.param(
            chat(user([{"type": "image_url", "image_url": {"url": "ftp://x.test/a.png"}}])),
            "messages[0].content[0]",
            id="image-scheme",
        ),
        pytest.param(chat(user(5)), "messages[0].content", id="content-type"),
        pytest.param(
            chat({"role": "function", "name": "f", "content": "x"}),
            "messages[0].role",
            id="function-role",
        ),
        pytest.param(
            chat({"role": "tool", "content": "x"}), "messages[0].tool_call_id", id="tool-no-id"
        ),
        pytest.param(
            chat(
                {
                    "role": "assistant",
                    "tool_calls": [{**CALL, "function": {"name": "f", "arguments": SECRET_ARGS}}],
                }
            ),
            "messages[0].tool_calls[0].function.arguments",
            id="tool-arguments-invalid-json",
        ),
        pytest.param(
            chat(
                {
                    "role": "assistant",
                    "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "[1]"}}],
                }
            ),
            "messages[0].tool_calls[0].function.arguments",
            id="tool-arguments-not-object",
        ),
        pytest.param(
            chat({"role": "assistant", "tool_calls": [{**CALL, "id": None}]}),
            "messages[0].tool_calls[0].id",
            id="tool-call-no-id",
        ),
        pytest.param(
            chat(user("hi"), tools=[{"type": "web_search"}]), "tools[0]", id="non-function-tool"
        ),
        pytest.param(
            chat(user("hi"), tools=[WEATHER_TOOL], tool_choice="sometimes"),
            "tool_choice",
            id="tool-choice",
        ),
    ],
)
def test_request_refused(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        to_messages_request(body)
    assert info.value.param == param
    assert info.value.status_code == 400
    assert "4111" not in info.value.message


# ---------------------------------------------------------------- answers


def message(
    content: list[dict[str, Any]], stop_reason: str | None = "end_turn", **usage: int
) -> dict[str, Any]:
    body = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-test-20250101",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 5, **usage},
    }
    Message.model_validate(body)  # the fixture is a real Anthropic Message
    return body


TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Lagos"}}


@pytest.mark.parametrize(
    ("content", "stop_reason", "expected_message", "expected_finish"),
    [
        pytest.param(
            [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}],
            "end_turn",
            {"role": "assistant", "content": "Hello", "refusal": None},
            "stop",
            id="text",
        ),
        pytest.param(
            [{"type": "text", "text": "Let me check."}, TOOL_USE],
            "tool_use",
            {
                "role": "assistant",
                "content": "Let me check.",
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Lagos"}'},
                    }
                ],
            },
            "tool_calls",
            id="text-and-tool",
        ),
        pytest.param(
            [{"type": "thinking", "thinking": "hmm", "signature": "s"}, TOOL_USE],
            "tool_use",
            {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Lagos"}'},
                    }
                ],
            },
            "tool_calls",
            id="tool-only-thinking-dropped",
        ),
        pytest.param(
            [],
            "max_tokens",
            {"role": "assistant", "content": "", "refusal": None},
            "length",
            id="empty",
        ),
    ],
)
def test_answer(
    content: list[dict[str, Any]],
    stop_reason: str,
    expected_message: dict[str, Any],
    expected_finish: str,
) -> None:
    out = from_message(message(content, stop_reason), created=1700000000)
    ChatCompletion.model_validate(out)
    assert out == {
        "id": "msg_01",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "claude-test-20250101",
        "choices": [
            {
                "index": 0,
                "message": expected_message,
                "logprobs": None,
                "finish_reason": expected_finish,
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        ("something_new", "stop"),
        (None, "stop"),
    ],
)
def test_finish_reason(stop_reason: str | None, expected: str) -> None:
    assert finish_reason(stop_reason) == expected


def test_answer_usage_counts_cache() -> None:
    body = message(
        [{"type": "text", "text": "x"}], cache_read_input_tokens=100, cache_creation_input_tokens=8
    )
    usage = from_message(body, created=0)["usage"]
    assert usage == {
        "prompt_tokens": 120,
        "completion_tokens": 5,
        "total_tokens": 125,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 8},
    }


@pytest.mark.parametrize("answer", [None, [], {"type": "message"}, {"content": "text"}])
def test_answer_unusable(answer: Any) -> None:
    with pytest.raises(UpstreamError):
        from_message(answer, created=0)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            b'{"type":"error","error":{"type":"invalid_request_error","message":"bad max"}}',
            ("bad max", "invalid_request_error", "invalid_request"),
            id="invalid",
        ),
        pytest.param(
            b'{"type":"error","error":{"type":"rate_limit_error","message":"Slow down"}}',
            ("Slow down", "rate_limit_error", "rate_limit_exceeded"),
            id="rate-limit",
        ),
        pytest.param(
            b'{"type":"error","error":{"type":"authentication_error","message":"bad key"}}',
            ("bad key", "authentication_error", "invalid_api_key"),
            id="auth",
        ),
        pytest.param(
            b'{"type":"error","error":{"type":"brand_new_error","message":"?"}}',
            ("?", "upstream_error", "upstream_error"),
            id="unknown-type",
        ),
        pytest.param(
            b"<html>Bad gateway</html>",
            ("The provider answered 400.", "upstream_error", "upstream_error"),
            id="not-json",
        ),
    ],
)
def test_error_body(content: bytes, expected: tuple[str, str, str]) -> None:
    message_, type_, code = expected
    assert orjson.loads(openai_error_body(content, 400)) == {
        "error": {"message": message_, "type": type_, "param": None, "code": code}
    }


# ---------------------------------------------------------------- streams


def ev(kind: str, **fields: Any) -> bytes:
    """One Anthropic SSE event, as the API sends it (`event:` line + JSON data)."""
    payload = {"type": kind, **fields}
    if kind not in ("error", "ping"):
        _EVENT.validate_python(payload)
    return encode(orjson.dumps(payload), event=kind)


MESSAGE_START = ev(
    "message_start",
    message={
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-test-20250101",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 1},
    },
)
TEXT_STREAM = [
    MESSAGE_START,
    ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
    ev("ping"),
    b": keep-alive comment\n\n",
    ev("content_block_delta", index=0, delta={"type": "text_delta", "text": "Hello"}),
    ev("content_block_delta", index=0, delta={"type": "text_delta", "text": " world"}),
    ev("content_block_stop", index=0),
    ev(
        "message_delta",
        delta={"stop_reason": "end_turn", "stop_sequence": None},
        usage={"output_tokens": 15},
    ),
    ev("message_stop"),
]
TOOL_STREAM = [
    MESSAGE_START,
    ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
    ev("content_block_delta", index=0, delta={"type": "text_delta", "text": "Checking."}),
    ev("content_block_stop", index=0),
    ev(
        "content_block_start",
        index=1,
        content_block={"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
    ),
    ev("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": ""}),
    ev(
        "content_block_delta",
        index=1,
        delta={"type": "input_json_delta", "partial_json": '{"city": "La'},
    ),
    ev("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": 'gos"}'}),
    ev("content_block_stop", index=1),
    ev(
        "content_block_start",
        index=2,
        content_block={"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
    ),
    ev("content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": "{}"}),
    ev("content_block_stop", index=2),
    ev(
        "message_delta",
        delta={"stop_reason": "tool_use", "stop_sequence": None},
        usage={"output_tokens": 40},
    ),
    ev("message_stop"),
]


def translate(events: list[bytes], *, include_usage: bool = False) -> list[Any]:
    """Run events through a translator; return parsed OpenAI payloads (`"[DONE]"` kept)."""
    translator = StreamTranslator(
        model="claude-test", created=1700000000, include_usage=include_usage
    )
    out: list[bytes] = []
    for event in events:
        out.extend(translator.feed(event))
    out.extend(translator.close())
    parsed: list[Any] = []
    for event in out:
        assert event.startswith(b"data: ") and event.endswith(b"\n\n")
        data = data_of(event)
        assert data is not None
        parsed.append("[DONE]" if event == DONE else orjson.loads(data))
    for payload in parsed:
        if isinstance(payload, dict) and "error" not in payload:
            ChatCompletionChunk.model_validate(payload)
    return parsed


def test_stream_text() -> None:
    out = translate(TEXT_STREAM)
    assert out[-1] == "[DONE]"
    chunks = out[:-1]
    assert {c["id"] for c in chunks} == {"msg_01"}
    assert {c["model"] for c in chunks} == {"claude-test-20250101"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["created"] for c in chunks} == {1700000000}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d.get("content", "") for d in deltas) == "Hello world"
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert all("usage" not in c for c in chunks)


@pytest.mark.parametrize(
    ("events", "usage"),
    [
        pytest.param(
            TEXT_STREAM,
            {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40},
            id="text",
        ),
        pytest.param(
            TOOL_STREAM,
            {"prompt_tokens": 25, "completion_tokens": 40, "total_tokens": 65},
            id="tools",
        ),
        pytest.param(
            [
                *TEXT_STREAM[:-2],
                ev(
                    "message_delta",
                    delta={"stop_reason": "max_tokens", "stop_sequence": None},
                    usage={"output_tokens": 9, "input_tokens": 30, "cache_read_input_tokens": 10},
                ),
                ev("message_stop"),
            ],
            {
                "prompt_tokens": 40,
                "completion_tokens": 9,
                "total_tokens": 49,
                "prompt_tokens_details": {"cached_tokens": 10, "cache_write_tokens": 0},
            },
            id="usage-updated-in-message-delta",
        ),
    ],
)
def test_stream_usage_chunk(events: list[bytes], usage: dict[str, Any]) -> None:
    out = translate(events, include_usage=True)
    assert out[-1] == "[DONE]"
    last = out[-2]
    assert last["choices"] == []
    assert last["usage"] == usage
    assert last["id"] == "msg_01"
    assert out[-3]["choices"][0]["finish_reason"] is not None


def test_stream_tool_calls() -> None:
    out = translate(TOOL_STREAM)
    assert out[-1] == "[DONE]"
    chunks = out[:-1]
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for call in chunk["choices"][0]["delta"].get("tool_calls", []):
            entry = calls.setdefault(call["index"], {"arguments": ""})
            if "id" in call:
                entry.update(id=call["id"], name=call["function"]["name"], type=call["type"])
            entry["arguments"] += call["function"]["arguments"]
    assert calls == {
        0: {
            "id": "toolu_1",
            "name": "get_weather",
            "type": "function",
            "arguments": '{"city": "Lagos"}',
        },
        1: {"id": "toolu_2", "name": "now", "type": "function", "arguments": "{}"},
    }
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "Checking."
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }


def test_stream_thinking_block_is_skipped() -> None:
    events = [
        MESSAGE_START,
        ev(
            "content_block_start",
            index=0,
            content_block={"type": "thinking", "thinking": "", "signature": ""},
        ),
        ev("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "hmm"}),
        ev("content_block_delta", index=0, delta={"type": "signature_delta", "signature": "s"}),
        ev("content_block_stop", index=0),
        *TEXT_STREAM[1:],
    ]
    assert translate(events) == translate(TEXT_STREAM)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(
            {"type": "overloaded_error", "message": "Overloaded"},
            {"message": "Overloaded", "type": "server_error", "param": None, "code": "overloaded"},
            id="overloaded",
        ),
        pytest.param(
            None,
            {
                "message": "The provider failed mid-stream.",
                "type": "upstream_error",
                "param": None,
                "code": "upstream_error",
            },
            id="no-detail",
        ),
    ],
)
def test_stream_error_event_ends_stream(error: Any, expected: dict[str, Any]) -> None:
    events = [*TEXT_STREAM[:5], ev("error", error=error), *TEXT_STREAM[5:]]
    out = translate(events, include_usage=True)
    assert out[-1] == {"error": expected}
    assert "[DONE]" not in out
    assert sum(1 for c in out if "error" in c) == 1
    assert [c["choices"][0]["delta"].get("content") for c in out[:-1]] == ["", "Hello"]


@pytest.mark.parametrize(
    "events",
    [
        pytest.param(TEXT_STREAM[:6], id="cut-mid-answer"),
        pytest.param([], id="nothing"),
        pytest.param([*TEXT_STREAM[:3], b"data: {not json\n\n"], id="garbage"),
    ],
)
def test_stream_cut_short_ends_with_error(events: list[bytes]) -> None:
    out = translate(events)
    assert "[DONE]" not in out
    assert out[-1]["error"]["code"] == "upstream_error"
    assert sum(1 for c in out if "error" in c) == 1


def test_stream_ignores_events_after_stop() -> None:
    translator = StreamTranslator(model="m", created=0)
    for event in TEXT_STREAM:
        translator.feed(event)
    assert translator.finished
    assert translator.feed(TEXT_STREAM[4]) == []
    assert translator.close() == []


def test_stream_without_message_delta_still_finishes() -> None:
    out = translate([MESSAGE_START, TEXT_STREAM[4], ev("message_stop")])
    assert out[-2]["choices"][0]["finish_reason"] == "stop"
    assert out[-1] == "[DONE]"
