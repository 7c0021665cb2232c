"""Streaming is incremental, and a client that goes away cancels the upstream call."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx

from tests.clients import streamed_chat
from tests.conftest import KEY_ACME

HANG_STREAMED = {"model": "hang", "stream": True, "messages": [{"role": "user", "content": "x"}]}


async def test_client_disconnect_cancels_upstream_and_records_usage(gateway, fresh_upstream):
    rid = f"disc-{uuid.uuid4().hex}"
    async with streamed_chat(gateway.v1, KEY_ACME, HANG_STREAMED, request_id=rid) as resp:
        assert resp.status_code == 200
        first = await anext(resp.aiter_bytes())
        assert first.startswith(b"data: ")
        # leaving the block closes the connection mid-stream
    assert await asyncio.to_thread(fresh_upstream.disconnected.wait, 5), (
        "upstream never saw the disconnect"
    )
    record = gateway.sink.wait_for(rid)
    assert record.status == 499 and record.error == "client_disconnected"
    assert record.ttft_ms is not None


async def test_chunks_arrive_before_the_stream_ends(gateway, fresh_upstream):
    """The hang model sends two chunks then waits: seeing them proves nothing is buffered."""
    async with streamed_chat(gateway.v1, KEY_ACME, HANG_STREAMED) as resp:
        started = time.monotonic()
        seen = b""
        async for part in resp.aiter_bytes():
            seen += part
            if seen.count(b"\n\n") >= 2:
                break
        assert time.monotonic() - started < 2
        assert b'"content":"one "' in seen


async def test_non_streamed_call_is_cancelled_when_the_client_leaves(gateway, fresh_upstream):
    rid = f"disc-json-{uuid.uuid4().hex}"
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=0.5)) as http:
        try:
            await http.post(
                gateway.v1 + "/chat/completions",
                headers={"authorization": f"Bearer {KEY_ACME}", "x-request-id": rid},
                json={"model": "hang-json", "messages": [{"role": "user", "content": "x"}]},
            )
        except httpx.ReadTimeout:
            pass
        else:
            raise AssertionError("the fake upstream should never answer")
    assert await asyncio.to_thread(fresh_upstream.disconnected.wait, 5), (
        "upstream call not cancelled"
    )
    record = gateway.sink.wait_for(rid)
    assert record.status == 499 and record.error == "client_disconnected"
