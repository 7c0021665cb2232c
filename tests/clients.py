"""Calling the gateway from tests the way a client does, where raw httpx needs a few steps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx


@asynccontextmanager
async def streamed_chat(
    v1: str, key: str, body: dict[str, Any], request_id: str | None = None
) -> AsyncIterator[httpx.Response]:
    """A chat completion POSTed to `v1` by a client of its own, its response open for
    reading as it streams; leaving closes the connection, wherever the stream is."""
    headers = {"authorization": f"Bearer {key}"}
    if request_id is not None:
        headers["x-request-id"] = request_id
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("POST", v1 + "/chat/completions", headers=headers, json=body) as resp,
    ):
        yield resp
