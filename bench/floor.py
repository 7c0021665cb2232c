"""The "floor": the thinnest useful proxy, for comparison with Railgate only.

One route, POST /v1/chat/completions: check the bearer key against a constant, forward
the body bytes upstream with one shared aiohttp session, return the answer bytes.
Served by uvicorn with uvloop + httptools as a raw ASGI app, like Railgate.
Usage: python bench/floor.py PORT UPSTREAM_BASE_URL
"""

import sys
from typing import Any

import aiohttp
import uvicorn

BENCH_KEY = "rg-bench-3f9c2a7e51d04b8c96e1a0f7d2b45c8e19a6f3d7"
_AUTH = b"Bearer " + BENCH_KEY.encode()
_JSON = [(b"content-type", b"application/json")]
_UPSTREAM_HEADERS = {"authorization": "Bearer upstream-key", "content-type": "application/json"}
_state: dict[str, Any] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()  # lifespan.startup
        _state["session"] = aiohttp.ClientSession(headers=_UPSTREAM_HEADERS)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await _state["session"].close()
        await send({"type": "lifespan.shutdown.complete"})
        return
    status, body = 404, b'{"error":"not found"}'
    if scope["path"] == "/healthz":
        status, body = 200, b'{"ok":true}'
    elif scope["method"] == "POST" and scope["path"] == "/v1/chat/completions":
        status, body = 401, b'{"error":"bad key"}'
        if dict(scope["headers"]).get(b"authorization") == _AUTH:
            request, more = b"", True
            while more:
                msg = await receive()
                request, more = request + msg.get("body", b""), msg.get("more_body", False)
            async with _state["session"].post(_state["url"], data=request) as resp:
                status, body = resp.status, await resp.read()
    await send({"type": "http.response.start", "status": status, "headers": _JSON})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    port, _state["url"] = int(sys.argv[1]), sys.argv[2].rstrip("/") + "/chat/completions"
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
