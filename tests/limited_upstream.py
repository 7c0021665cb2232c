"""A second fake upstream for limit tests: it counts what it serves and can refuse.

`LimitedUpstream` answers OpenAI chat completions (streamed or not) and records, under a
lock, how many requests it served, how many were in flight at once (the most ever),
and how many it refused. Knobs, set by the test between runs:

    delay_s        hold each answer this long (requests stay in flight)
    hang           hold each answer until the client goes away
    rpm            its own account limit: above it in a sliding 60 s window it answers
                   429 with `retry-after` (what a real provider does), and reports
                   `x-ratelimit-remaining-requests` on every answer
    usage          (prompt_tokens, completion_tokens) reported in every answer
    fail_status    answer this status (e.g. 500) instead of a completion
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.servers import handle_lifespan, read_body, send_json


@dataclass
class LimitedUpstream:
    delay_s: float = 0.0
    hang: bool = False
    rpm: int | None = None
    usage: tuple[int, int] = (10, 5)
    fail_status: int | None = None
    served: int = 0
    refused: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    disconnects: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _times: deque[float] = field(default_factory=deque)

    def reset(self) -> None:
        with self.lock:
            self.delay_s, self.hang, self.rpm, self.fail_status = 0.0, False, None, None
            self.usage = (10, 5)
            # `in_flight` is a live gauge: an earlier test's handler may still be running.
            self.served = self.refused = 0
            self.max_in_flight = self.in_flight
            self.disconnects = 0
            self._times.clear()

    def _admit(self) -> tuple[bool, int]:
        """Count one request against `rpm`; (accepted, remaining)."""
        with self.lock:
            if self.rpm is None:
                return True, 1_000_000
            now = time.monotonic()
            while self._times and self._times[0] <= now - 60:
                self._times.popleft()
            if len(self._times) >= self.rpm:
                self.refused += 1
                return False, 0
            self._times.append(now)
            return True, self.rpm - len(self._times)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if await handle_lifespan(scope, receive, send):
            return
        body = await read_body(receive)
        request = orjson.loads(body)
        accepted, remaining = self._admit()
        limit_headers = [(b"x-ratelimit-remaining-requests", str(remaining).encode())]
        if not accepted:
            error = {"error": {"message": "provider rpm exceeded", "type": "requests",
                               "param": None, "code": "rate_limit_exceeded"}}  # fmt: skip
            await send_json(
                send, 429, orjson.dumps(error), [(b"retry-after", b"1"), *limit_headers]
            )
            return
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        counted = False
        try:
            if self.hang:
                while (await receive())["type"] != "http.disconnect":
                    pass
                with self.lock:  # no longer in flight once the disconnect is counted
                    self.in_flight -= 1
                    self.disconnects += 1
                counted = True
                return
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.fail_status is not None:
                error = {"error": {"message": "upstream failed", "type": "server_error",
                                   "param": None, "code": None}}  # fmt: skip
                await send_json(send, self.fail_status, orjson.dumps(error), limit_headers)
                return
            with self.lock:  # counted before the answer leaves: a client that has it sees it
                self.served += 1
            prompt, completion = self.usage
            usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                     "total_tokens": prompt + completion}  # fmt: skip
            if request.get("stream"):
                await self._stream(send, request, usage, limit_headers)
            else:
                answer = {
                    "id": "chatcmpl-limited",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": request.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "ok"}}],
                    "usage": usage,
                }  # fmt: skip
                await send_json(send, 200, orjson.dumps(answer), limit_headers)
        finally:
            if not counted:
                with self.lock:
                    self.in_flight -= 1

    async def _stream(
        self,
        send: Any,
        request: dict[str, Any],
        usage: dict[str, int],
        extra: list[tuple[bytes, bytes]],
    ) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), *extra]})  # fmt: skip
        base = {"id": "chatcmpl-limited", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": request.get("model")}  # fmt: skip
        chunks = [
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok"},
                                  "finish_reason": None}]},
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {**base, "choices": [], "usage": usage},
        ]  # fmt: skip
        for chunk in chunks:
            data = b"data: " + orjson.dumps(chunk) + b"\n\n"
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
