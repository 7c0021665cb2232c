"""`parse_request`: typed checks on the fields we use, every other field kept for forwarding."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import InvalidRequest
from gateway.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    parse_request,
)

USER = [{"role": "user", "content": "hi"}]
EXTRAS: dict[str, Any] = {
    "x_vendor": {"deep": [1, {"a": None}], "f": 0.5},
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
    "logprobs": True,
    "top_logprobs": 3,
    "seed": 7,
    "metadata": {"k": "v"},
    "unicode": "ẹ̀kọ́ 🚀",
}

VALID: list[tuple[str, Any, dict[str, Any]]] = [
    ("chat/completions", ChatCompletionRequest, {"model": "m", "messages": USER}),
    ("chat/completions", ChatCompletionRequest, {"model": "m", "messages": USER, **EXTRAS}),
    (
        "chat/completions",
        ChatCompletionRequest,
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "s"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c", "content": "sunny", "x_part": 1},
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "tool_choice": "auto",
            "parallel_tool_calls": False,
            "stream": True,
            "stream_options": {"include_usage": True, "x_opt": 1},
            "max_tokens": None,
            "max_completion_tokens": 10,
            "temperature": 1,
            "top_p": 0.5,
            "n": 2,
            "user": "end-user-1",
        },
    ),
    ("completions", CompletionRequest, {"model": "m", "prompt": "say", **EXTRAS}),
    ("completions", CompletionRequest, {"model": "m", "prompt": ["a", "b"], "suffix": "!"}),
    ("completions", CompletionRequest, {"model": "m", "prompt": [[1, 2, 3]], "echo": True}),
    ("embeddings", EmbeddingRequest, {"model": "m", "input": "text", **EXTRAS}),
    (
        "embeddings",
        EmbeddingRequest,
        {"model": "m", "input": ["a", "b"], "dimensions": 8, "encoding_format": "float"},
    ),
    ("embeddings", EmbeddingRequest, {"model": "m", "input": [[1, 2], [3]], "user": "u"}),
]


@pytest.mark.parametrize(("endpoint", "kind", "body"), VALID)
def test_valid_bodies_keep_every_field(endpoint: Any, kind: type, body: dict[str, Any]) -> None:
    parsed = parse_request(endpoint, orjson.dumps(body))
    assert parsed.endpoint == endpoint
    assert isinstance(parsed.typed, kind)
    assert parsed.body == body  # unknown fields, nulls, nesting: all kept as sent
    assert parsed.model == "m"


def test_typed_view_of_chat_request() -> None:
    body = {
        "model": "m",
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u1",
    }
    parsed = parse_request("chat/completions", orjson.dumps(body))
    assert parsed.stream and parsed.wants_usage and parsed.user == "u1"
    plain = parse_request("chat/completions", orjson.dumps({"model": "m", "messages": USER}))
    assert not plain.stream and not plain.wants_usage and plain.user is None
    no_usage = {"model": "m", "messages": USER, "stream": True, "stream_options": None}
    assert not parse_request("chat/completions", orjson.dumps(no_usage)).wants_usage


def test_embeddings_never_stream() -> None:
    parsed = parse_request("embeddings", orjson.dumps({"model": "m", "input": "x", "stream": True}))
    assert not parsed.stream and not parsed.wants_usage


def _deep(depth: int) -> bytes:
    return b'{"model":"m","messages":[{"role":"user","content":"x"}],"x":' + (
        b"[" * depth + b"]" * depth + b"}"
    )


INVALID: list[tuple[str, str, bytes | dict[str, Any] | list[Any], str | None]] = [
    # (id, endpoint, body, expected param)
    ("not-json", "chat/completions", b"{", None),
    ("empty", "chat/completions", b"", None),
    ("binary", "chat/completions", bytes(range(256)), None),
    (
        "latin1",
        "chat/completions",
        b'{"model":"m","messages":[{"role":"user","content":"\xe9"}]}',
        None,
    ),
    ("array", "chat/completions", [], None),
    ("string", "completions", b'"x"', None),
    ("null", "embeddings", b"null", None),
    ("number", "embeddings", b"1", None),
    ("no-model", "chat/completions", {"messages": USER}, "model"),
    ("no-model-emb", "embeddings", {"input": "x"}, "model"),
    ("model-null", "chat/completions", {"model": None, "messages": USER}, "model"),
    ("model-int", "completions", {"model": 5, "prompt": "x"}, "model"),
    ("model-empty", "chat/completions", {"model": "", "messages": USER}, "model"),
    ("model-empty-emb", "embeddings", {"model": "", "input": "x"}, "model"),
    ("messages-missing", "chat/completions", {"model": "m"}, "messages"),
    ("messages-empty", "chat/completions", {"model": "m", "messages": []}, "messages"),
    ("messages-string", "chat/completions", {"model": "m", "messages": "hi"}, "messages"),
    ("messages-object", "chat/completions", {"model": "m", "messages": {}}, "messages"),
    ("message-null", "chat/completions", {"model": "m", "messages": [None]}, "messages[0]"),
    (
        "message-no-role",
        "chat/completions",
        {"model": "m", "messages": [*USER, {"content": "x"}]},
        "messages[1].role",
    ),
    ("role-int", "chat/completions", {"model": "m", "messages": [{"role": 1}]}, "messages[0].role"),
    (
        "content-int",
        "chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": 5}]},
        "messages[0].content",
    ),
    (
        "stream-string",
        "chat/completions",
        {"model": "m", "messages": USER, "stream": "yes"},
        "stream",
    ),
    ("stream-int", "completions", {"model": "m", "prompt": "x", "stream": 1}, "stream"),
    (
        "stream-options-string",
        "chat/completions",
        {"model": "m", "messages": USER, "stream_options": "x"},
        "stream_options",
    ),
    (
        "include-usage-string",
        "chat/completions",
        {"model": "m", "messages": USER, "stream_options": {"include_usage": "yes"}},
        "stream_options.include_usage",
    ),
    (
        "max-tokens-string",
        "chat/completions",
        {"model": "m", "messages": USER, "max_tokens": "5"},
        "max_tokens",
    ),
    (
        "max-tokens-float",
        "completions",
        {"model": "m", "prompt": "x", "max_tokens": 1.5},
        "max_tokens",
    ),
    (
        "temperature-string",
        "chat/completions",
        {"model": "m", "messages": USER, "temperature": "hot"},
        "temperature",
    ),
    ("tools-string", "chat/completions", {"model": "m", "messages": USER, "tools": "x"}, "tools"),
    ("user-int", "chat/completions", {"model": "m", "messages": USER, "user": 5}, "user"),
    ("prompt-missing", "completions", {"model": "m"}, "prompt"),
    ("prompt-null", "completions", {"model": "m", "prompt": None}, "prompt"),
    ("prompt-object", "completions", {"model": "m", "prompt": {}}, "prompt"),
    ("input-missing", "embeddings", {"model": "m"}, "input"),
    ("input-object", "embeddings", {"model": "m", "input": {}}, "input"),
    (
        "dimensions-string",
        "embeddings",
        {"model": "m", "input": "x", "dimensions": "8"},
        "dimensions",
    ),
    (
        "dimensions-bool",
        "embeddings",
        {"model": "m", "input": "x", "dimensions": True},
        "dimensions",
    ),
    ("too-deep-for-orjson", "chat/completions", _deep(2000), None),
    ("too-deep-to-forward", "chat/completions", _deep(300), None),
    ("too-deep-for-msgspec", "chat/completions", _deep(1010), None),
]


@pytest.mark.parametrize(
    ("endpoint", "body", "param"),
    [pytest.param(e, b, p, id=i) for i, e, b, p in INVALID],
)
def test_invalid_bodies_name_the_field(endpoint: Any, body: Any, param: str | None) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(InvalidRequest) as info:
        parse_request(endpoint, raw)
    error = info.value
    assert error.param == param
    assert error.status_code == 400 and error.code == "invalid_request"
    assert error.message and "Traceback" not in error.message
    shaped = orjson.loads(error.body())["error"]
    assert shaped == {
        "message": error.message,
        "type": "invalid_request_error",
        "param": param,
        "code": "invalid_request",
    }


def test_messages_never_quote_the_input() -> None:
    secret = "SECRET-PROMPT-TEXT"
    bodies = [
        {"model": "m", "messages": secret},
        {"model": "m", "messages": [{"role": "user", "content": {"t": secret}}]},
        {"model": 7, "messages": [{"role": "user", "content": secret}]},
        {"model": "m", "prompt": {"p": secret}},
    ]
    for endpoint, body in zip(
        ["chat/completions", "chat/completions", "chat/completions", "completions"],
        bodies,
        strict=True,
    ):
        with pytest.raises(InvalidRequest) as info:
            parse_request(endpoint, orjson.dumps(body))  # type: ignore[arg-type]
        assert secret not in info.value.message
        assert secret not in info.value.body().decode()


def test_moderately_deep_unknown_field_is_accepted() -> None:
    parsed = parse_request("chat/completions", _deep(100))
    assert parsed.body["x"] == orjson.loads(b"[" * 100 + b"]" * 100)
    assert orjson.loads(orjson.dumps(parsed.body)) == parsed.body  # still forwardable
