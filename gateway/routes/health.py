"""`/healthz` (the process answers) and `/readyz` (config loaded and store reachable)."""

from __future__ import annotations

from typing import Any

import orjson
from litestar import Request, Response, get

from gateway.store.base import Store

__all__ = ["routes"]


@get("/healthz")
async def healthz() -> Response[bytes]:
    return Response(b'{"status":"ok"}', media_type="application/json")


@get("/readyz")
async def readyz(request: Request[Any, Any, Any]) -> Response[bytes]:
    store: Store = request.app.state.store
    ready = await store.ping()
    body = {"status": "ready" if ready else "unavailable", "store": ready, "config": True}
    return Response(
        orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json"
    )


routes = [healthz, readyz]
