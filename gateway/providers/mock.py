"""`type: mock`: a deterministic OpenAI-compatible model inside the process.

It lets the gateway run with no account and no network. Answers are derived from the
prompt (`mock-1 heard: <last user text>`; the model `mock-judge` instead answers a
rails self-check: `Yes` (block) when the prompt contains the word `UNSAFE`, else `No`), streams arrive in several chunks, usage is
always reported (about four characters per token), and embeddings are stable vectors
derived from a hash of the input.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.config import ProviderConfig
from gateway.errors import InvalidRequest
from gateway.providers.base import EventStream, HeaderObserver, UpstreamReply, UpstreamRequest
from gateway.sse import DONE, encode

__all__ = ["Answer", "MockProvider", "RefusalProvider", "answer_for"]

_MAX_ECHO = 2000
JUDGE_MODEL = "mock-judge"
"""Upstream model name of the mock's deterministic rails judge."""


def _tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return ""


def answer_for(body: dict[str, Any]) -> tuple[str, int]:
    """The mock answer to an OpenAI-shaped chat or completion body, and its prompt tokens."""
    if "messages" in body:
        messages = [m for m in body["messages"] if isinstance(m, dict)]
        texts = [_text_of(m.get("content")) for m in messages]
        last_user = next(
            (_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"),
            "",
        )
        prompt_tokens = sum(_tokens(t) + 3 for t in texts)
    else:
        prompt = body.get("prompt", "")
        last_user = prompt if isinstance(prompt, str) else str(prompt)
        prompt_tokens = _tokens(last_user)
    if body.get("model") == JUDGE_MODEL:
        return ("Yes" if "UNSAFE" in last_user else "No"), prompt_tokens
    return f"mock-1 heard: {last_user[:_MAX_ECHO]}", prompt_tokens


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class MockProvider:
    def __init__(self, config: ProviderConfig) -> None:
        self.name = config.name

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def watch(self, observer: HeaderObserver) -> None:
        """No upstream, no headers to see."""

    def answer(self, body: dict[str, Any]) -> Answer:
        """What the model says to an OpenAI-shaped chat or completion body."""
        text, prompt_tokens = answer_for(body)
        return Answer(text, prompt_tokens, _tokens(text))

    async def complete(self, request: UpstreamRequest) -> UpstreamReply:
        body = request.body
        if request.endpoint == "embeddings":
            return UpstreamReply(orjson.dumps(_embeddings(body)))
        answer = self.answer(body)
        text, finish = answer.text, answer.finish_reason
        usage = _usage(answer.prompt_tokens, answer.completion_tokens)
        created = int(time.time())
        if request.endpoint == "completions":
            reply: dict[str, Any] = {
                "id": f"cmpl-mock-{uuid.uuid4().hex[:16]}",
                "object": "text_completion",
                "created": created,
                "model": body["model"],
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
                "usage": usage,
            }
        else:
            reply = {
                "id": f"chatcmpl-mock-{uuid.uuid4().hex[:16]}",
                "object": "chat.completion",
                "created": created,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "finish_reason": finish,
                        "logprobs": None,
                    }
                ],
                "usage": usage,
            }
        return UpstreamReply(orjson.dumps(reply))

    async def open_stream(self, request: UpstreamRequest) -> EventStream:
        return _MockStream(request, self.answer(request.body))


class _MockStream:
    def __init__(self, request: UpstreamRequest, answer: Answer) -> None:
        self._request = request
        self._answer = answer
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        body = self._request.body
        chat = self._request.endpoint == "chat/completions"
        text = self._answer.text
        base = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-mock-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": body["model"],
        }
        words = text.split(" ")
        pieces = [w + " " for w in words[:-1]] + [words[-1]]
        if chat:
            pieces.insert(0, "")
        for i, piece in enumerate(pieces):
            if self._closed:
                return
            if chat:
                delta: dict[str, Any] = {"content": piece}
                if i == 0:
                    delta["role"] = "assistant"
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
            else:
                choice = {"index": 0, "text": piece, "finish_reason": None}
            yield encode(orjson.dumps({**base, "choices": [choice]}))
            await asyncio.sleep(0)
        final: dict[str, Any] = {"index": 0, "finish_reason": self._answer.finish_reason}
        if chat:
            final["delta"] = {}
        else:
            final["text"] = ""
        yield encode(orjson.dumps({**base, "choices": [final]}))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            usage = _usage(self._answer.prompt_tokens, self._answer.completion_tokens)
            yield encode(orjson.dumps({**base, "choices": [], "usage": usage}))
        yield DONE


class RefusalProvider(MockProvider):
    """Answers with a fixed refusal and `finish_reason: content_filter`, spending nothing:
    what a client receives when its prompt is blocked under `on_block: refuse`."""

    def __init__(self, text: str) -> None:
        self.name = "refusal"
        self.text = text

    def answer(self, body: dict[str, Any]) -> Answer:
        return Answer(self.text, 0, 0, "content_filter")


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    raw = body.get("input", "")
    inputs = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else list(raw)
    dims = body.get("dimensions")
    dims = 16 if dims is None else dims
    if not isinstance(dims, int) or not 1 <= dims <= 4096:
        raise InvalidRequest("`dimensions` must be between 1 and 4096.", param="dimensions")
    data = []
    total = 0
    for i, item in enumerate(inputs):
        text = item if isinstance(item, str) else orjson.dumps(item).decode()
        total += _tokens(text)
        data.append({"object": "embedding", "index": i, "embedding": _vector(text, int(dims))})
    return {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": total, "total_tokens": total},
    }


def _vector(text: str, dims: int) -> list[float]:
    seed = hashlib.sha256(text.encode()).digest()
    out: list[float] = []
    counter = 0
    while len(out) < dims:
        block = hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        out.extend((v / 65535.0) * 2 - 1 for v in struct.unpack(">16H", block))
        counter += 1
    return [round(v, 6) for v in out[:dims]]
