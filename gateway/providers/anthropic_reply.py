"""Anthropic Messages answers → OpenAI chat completions, as pure functions (no I/O).

from_message()          Anthropic `Message`       → OpenAI `chat.completion`
StreamTranslator        Anthropic SSE events      → OpenAI `chat.completion.chunk` events
openai_error_body()     Anthropic error body      → OpenAI error body
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import UpstreamError
from gateway.sse import DONE, data_of, encode

__all__ = ["StreamTranslator", "finish_reason", "from_message", "openai_error_body"]

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error type → (OpenAI error type, code).
_ERROR_KINDS = {
    "invalid_request_error": ("invalid_request_error", "invalid_request"),
    "authentication_error": ("authentication_error", "invalid_api_key"),
    "billing_error": ("insufficient_quota", "insufficient_quota"),
    "permission_error": ("permission_error", "permission_denied"),
    "not_found_error": ("not_found_error", "not_found"),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "rate_limit_error": ("rate_limit_error", "rate_limit_exceeded"),
    "timeout_error": ("timeout_error", "upstream_timeout"),
    "api_error": ("server_error", "upstream_error"),
    "overloaded_error": ("server_error", "overloaded"),
}


def finish_reason(stop_reason: Any) -> str:
    """Anthropic `stop_reason` → OpenAI `finish_reason` (unknown or missing → `stop`)."""
    return _FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic counts cache reads and writes apart from `input_tokens`; OpenAI's
    `prompt_tokens` includes them, with the cached part in `prompt_tokens_details`."""
    cache_read = _int(usage.get("cache_read_input_tokens"))
    cache_write = _int(usage.get("cache_creation_input_tokens"))
    prompt = _int(usage.get("input_tokens")) + cache_read + cache_write
    completion = _int(usage.get("output_tokens"))
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cache_read or cache_write:
        out["prompt_tokens_details"] = {
            "cached_tokens": cache_read,
            "cache_write_tokens": cache_write,
        }
    return out


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def from_message(message: Any, *, created: int) -> dict[str, Any]:
    """Translate an Anthropic `Message` into an OpenAI `chat.completion`.

    Raises:
        UpstreamError: the answer is not a Message.
    """
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        raise UpstreamError("The provider's answer is not a message.")
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in message["content"]:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            tool_calls.append(_tool_call(block))
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
        "refusal": None,
    }
    if tool_calls:
        reply["tool_calls"] = tool_calls
    usage = message.get("usage")
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": finish_reason(message.get("stop_reason")),
            }
        ],
        "usage": _usage(usage if isinstance(usage, dict) else {}),
    }


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
    arguments = orjson.dumps(block.get("input") or {}).decode()
    function = {"name": block.get("name"), "arguments": arguments}
    return {"id": block.get("id"), "type": "function", "function": function}


# ---------------------------------------------------------------- errors


def _error(error: Any, fallback: str) -> dict[str, Any]:
    if not isinstance(error, dict):
        error = {}
    kind = error.get("type")
    type_, code = _ERROR_KINDS.get(kind, ("upstream_error", "upstream_error"))
    message = error.get("message")
    return {
        "error": {
            "message": message if isinstance(message, str) and message else fallback,
            "type": type_,
            "param": None,
            "code": code,
        }
    }


def openai_error_body(content: bytes, status: int) -> bytes:
    """An Anthropic error body (`{"type": "error", "error": {...}}`) in OpenAI's shape."""
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return orjson.dumps(_error(error, f"The provider answered {status}."))


# ---------------------------------------------------------------- stream


class StreamTranslator:
    """Turns one Anthropic event stream into OpenAI chunk events, one event at a time.

    Feed every upstream event to `feed()`; call `close()` when the upstream ends.
    After `message_stop` (usage chunk if asked, then `[DONE]`) or an `error` event
    (one OpenAI error event, no `[DONE]`) the translator is `finished` and ignores
    anything else. `close()` on an unfinished stream yields an error event: the
    upstream hung up mid-answer.
    """

    def __init__(self, *, model: str, created: int, include_usage: bool = False) -> None:
        self.finished = False
        self._include_usage = include_usage
        self._base: dict[str, Any] = {
            "id": "",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        self._usage: dict[str, Any] = {}
        self._tool_index: dict[int, int] = {}
        self._finish_sent = False

    def feed(self, event: bytes) -> list[bytes]:
        """OpenAI events for one upstream event (often none: pings, block stops)."""
        data = data_of(event)
        if self.finished or data is None:
            return []
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return self._fail({}, "The provider sent an unreadable event.")
        if not isinstance(payload, dict):
            return []
        kind = payload.get("type")
        if kind == "message_start":
            return self._start(payload.get("message"))
        if kind == "content_block_start":
            return self._block_start(payload)
        if kind == "content_block_delta":
            return self._block_delta(payload)
        if kind == "message_delta":
            return self._message_delta(payload)
        if kind == "message_stop":
            return self._stop()
        if kind == "error":
            return self._fail(payload.get("error"), "The provider failed mid-stream.")
        return []  # ping, content_block_stop, and event types added later

    def close(self) -> list[bytes]:
        """Events to send when the upstream ended; an error if the answer was cut short."""
        if self.finished:
            return []
        return self._fail({}, "The provider ended the stream before the answer was complete.")

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return encode(orjson.dumps({**self._base, "choices": [choice]}))

    def _start(self, message: Any) -> list[bytes]:
        if isinstance(message, dict):
            self._base["id"] = message.get("id") or ""
            self._base["model"] = message.get("model") or self._base["model"]
            if isinstance(message.get("usage"), dict):
                self._usage.update(message["usage"])
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, payload: dict[str, Any]) -> list[bytes]:
        block = payload.get("content_block")
        if not isinstance(block, dict):
            return []
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if block.get("type") != "tool_use":
            return []  # thinking and server-tool blocks have no OpenAI counterpart
        index = self._tool_index.setdefault(_int(payload.get("index")), len(self._tool_index))
        call = {
            "index": index,
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": ""},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, payload: dict[str, Any]) -> list[bytes]:
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            return []
        if delta.get("type") == "text_delta":
            return [self._chunk({"content": delta.get("text", "")})]
        index = self._tool_index.get(_int(payload.get("index")))
        if delta.get("type") == "input_json_delta" and index is not None:
            call = {"index": index, "function": {"arguments": delta.get("partial_json", "")}}
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _message_delta(self, payload: dict[str, Any]) -> list[bytes]:
        usage = payload.get("usage")
        if isinstance(usage, dict):
            # Counts in message_delta are cumulative; absent (None) ones keep their value.
            self._usage.update({k: v for k, v in usage.items() if v is not None})
        delta = payload.get("delta")
        stop_reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        if stop_reason is None:
            return []
        self._finish_sent = True
        return [self._chunk({}, finish_reason(stop_reason))]

    def _stop(self) -> list[bytes]:
        self.finished = True
        out = [] if self._finish_sent else [self._chunk({}, "stop")]
        if self._include_usage:
            usage = {**self._base, "choices": [], "usage": _usage(self._usage)}
            out.append(encode(orjson.dumps(usage)))
        out.append(DONE)
        return out

    def _fail(self, error: Any, fallback: str) -> list[bytes]:
        self.finished = True
        return [encode(orjson.dumps(_error(error, fallback)))]
