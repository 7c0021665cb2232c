"""`/metrics`: the process's metrics in the Prometheus text format."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from gateway.metrics import Counters
from gateway.telemetry.logs import dropped_lines

__all__ = ["routes"]

DROPPED = "railgate_telemetry_dropped_total"


@get("/metrics")
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Served as `text/plain; version=0.0.4; charset=utf-8` (Litestar adds the charset)."""
    counters: Counters = request.app.state.counters
    # Log lines dropped by the log writer's full queue (counted in `telemetry.logs`, on
    # whichever thread logged) join the telemetry drops when scraped.
    behind = dropped_lines() - counters.get(DROPPED, "logs")
    if behind > 0:
        counters.inc(DROPPED, "logs", by=behind)
    return Response(counters.render(), media_type="text/plain; version=0.0.4")


routes = [metrics]
