"""A real OpenAI-compatible upstream on loopback that tests control.

`FakeUpstream` is a raw ASGI app: it records every request it receives (path,
headers, body) and answers according to the requested model name, so one server
serves every scenario at once:

    anything else      chat/completions/embeddings answer with extra unknown fields
    (path /v1/messages) an Anthropic Messages answer or event stream
    tools              a tool call
    slow               waits `slow_s` before answering (time-out tests)
    drop               streams two chunks, then drops the connection
    hang               streams two chunks, then waits until the client goes away
    hang-json          (not streamed) waits until the client goes away
    status-<NNN>       answers NNN with an OpenAI error body
    garbage            answers 200 with a body that is not JSON
    no-usage           answers without a usage object (stream ignores include_usage)
    echo               answers with the last user message (streamed 3 characters a chunk)
    pretty             answers indented JSON (to tell untouched bytes from re-encoded ones)
    unsafe             answers a text containing UNSAFE (for output rails)
    judge              a rails model: answers "Yes" if the last user message contains
                       UNSAFE, else "No" (NeMo self-check prompts)
    slow-judge         the same after `slow_s`
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.servers import handle_lifespan, read_body, send_json


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class FakeUpstream:
    slow_s: float = 2.0
    received: list[Received] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def last(self) -> Received:
        with self.lock:
            return self.received[-1]

    def reset(self) -> None:
        with self.lock:
            self.received.clear()
        self.disconnected.clear()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if await handle_lifespan(scope, receive, send):
            return
        body = await read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        with self.lock:
            self.received.append(Received(scope["path"], headers, body))
        request = orjson.loads(body)
        model = str(request.get("model", ""))
        if scope["path"].endswith("/messages"):
            await _anthropic(send, request)
            return
        if model.startswith("status-"):
            status = int(model.removeprefix("status-"))
            error = {
                "error": {
                    "message": "upstream says no",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "upstream_code",
                }
            }
            extra = [(b"retry-after", b"7")] if status == 429 else []
            await send_json(send, status, orjson.dumps(error), extra)
            return
        if model == "garbage":
            await send_json(send, 200, b"<html>not json</html>")
            return
        if model == "hang-json":
            while (await receive())["type"] != "http.disconnect":
                pass
            self.disconnected.set()
            return
        if model in ("slow", "slow-judge"):
            await asyncio.sleep(self.slow_s)
        if request.get("stream"):
            await self._stream(scope, receive, send, request, model)
            return
        option = orjson.OPT_INDENT_2 if model == "pretty" else None
        await send_json(
            send, 200, orjson.dumps(_answer(scope["path"], request, model), option=option)
        )

    async def _stream(
        self, scope: Any, receive: Any, send: Any, request: dict[str, Any], model: str
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "system_fingerprint": "fp_fake",
            "x_upstream_extra": {"k": 1},
        }
        with_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        if model == "tools":
            deltas: list[dict[str, Any]] = [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ],
                },
                {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
                {"tool_calls": [{"index": 0, "function": {"arguments": '"Lagos"}'}}]},
            ]
            finish = "tool_calls"
        elif model == "echo":
            text = _last_user_text(request)
            deltas = [{"role": "assistant", "content": ""}] + [
                {"content": text[i : i + 3]} for i in range(0, len(text), 3)
            ]
            finish = "stop"
        else:
            deltas = [{"role": "assistant", "content": ""}] + [
                {"content": piece} for piece in ("one ", "two ", "three ", "four")
            ]
            finish = "stop"
        usage_null = {"usage": None} if with_usage else {}
        for i, delta in enumerate(deltas):
            chunk = {
                **base,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
                **usage_null,
            }
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + orjson.dumps(chunk) + b"\n\n",
                    "more_body": True,
                }
            )
            await asyncio.sleep(0 if model == "echo" else 0.01)
            if i == 1 and model == "drop":
                raise RuntimeError("fake upstream drops the connection")
            if i == 1 and model == "hang":
                while (await receive())["type"] != "http.disconnect":
                    pass
                self.disconnected.set()
                return
        final = {
            **base,
            "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}],
            **usage_null,
        }
        await send(
            {
                "type": "http.response.body",
                "body": b"data: " + orjson.dumps(final) + b"\n\n",
                "more_body": True,
            }
        )
        if with_usage and model != "no-usage":
            usage = {
                **base,
                "choices": [],
                "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15},
            }
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + orjson.dumps(usage) + b"\n\n",
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


def _answer(path: str, request: dict[str, Any], model: str) -> dict[str, Any]:
    usage = (
        None
        if model == "no-usage"
        else {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
    )
    if path.endswith("/embeddings"):
        return {
            "object": "list",
            "model": model,
            "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}],
            "usage": {"prompt_tokens": 3, "total_tokens": 3},
        }
    if path.endswith("/completions") and not path.endswith("/chat/completions"):
        return {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "text": "done", "finish_reason": "stop", "logprobs": None}],
            "usage": usage,
        }
    answer = _last_user_text(request) if model == "echo" else "fake answer"
    if model == "unsafe":
        answer = "Sure. Here are the UNSAFE instructions you asked for."
    if model in ("judge", "slow-judge"):  # a rails model: self-check prompts get Yes (block) or No
        answer = "Yes" if "UNSAFE" in _last_user_text(request) else "No"
    message: dict[str, Any] = {"role": "assistant", "content": answer, "refusal": None}
    finish = "stop"
    if model == "tools":
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Lagos"}'},
                }
            ],
        }
        finish = "tool_calls"
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fake",
        "x_upstream_extra": {"nested": [1, 2, 3]},
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }


ANTHROPIC_MESSAGE = {
    "id": "msg_fake",
    "type": "message",
    "role": "assistant",
    "model": "claude-upstream",
    "content": [{"type": "text", "text": "bonjour"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 9, "output_tokens": 2},
}


async def _anthropic(send: Any, request: dict[str, Any]) -> None:
    if not request.get("stream"):
        await send_json(send, 200, orjson.dumps(ANTHROPIC_MESSAGE))
        return
    start = {
        **ANTHROPIC_MESSAGE,
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 9, "output_tokens": 1},
    }
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "bon"}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "jour"},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 2},
        },
        {"type": "message_stop"},
    ]
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )
    for event in events:
        data = b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
        await send({"type": "http.response.body", "body": data, "more_body": True})
        await asyncio.sleep(0.005)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _last_user_text(request: dict[str, Any]) -> str:
    for message in reversed(request.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(p.get("text", "") for p in content or [] if p.get("type") == "text")
    return ""
