"""`/metrics`: the process's metrics in the Prometheus text format."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from gateway.metrics import Counters

__all__ = ["routes"]


@get("/metrics")
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Served as `text/plain; version=0.0.4; charset=utf-8` (Litestar adds the charset)."""
    counters: Counters = request.app.state.counters
    return Response(counters.render(), media_type="text/plain; version=0.0.4")


routes = [metrics]
