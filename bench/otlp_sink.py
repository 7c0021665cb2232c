"""A tiny OTLP/HTTP (JSON) receiver for the telemetry benchmark: it accepts and counts.

Every POST, whatever the path, is read in full and answered 200 `{}`; JSON bodies
(gzip accepted; bytes are counted decompressed) are decoded and their spans counted in
`resourceSpans[].scopeSpans[].spans`. Railgate's OTLP exporter posts to `/v1/traces`,
its Langfuse exporter to `/api/public/otel/v1/traces`; both land here. Counts per path
(requests, spans, body bytes, undecodable bodies) are served as JSON at `GET /stats`
and printed as one JSON line on stdout when the process stops (SIGTERM / SIGINT).
Usage: python bench/otlp_sink.py PORT
"""

import gzip
import sys
from typing import Any

import orjson
from aiohttp import web

MAX_BODY = 256 * 1024 * 1024  # a 512-span batch with content is a few MB; aiohttp's default is 1 MB
_stats: dict[str, dict[str, int]] = {}


def _spans(body: bytes) -> int:
    data = orjson.loads(body)
    return sum(
        len(scope.get("spans") or ())
        for resource in data.get("resourceSpans") or ()
        for scope in resource.get("scopeSpans") or ()
    )


async def receive(request: web.Request) -> web.Response:
    body = await request.read()
    counts = _stats.setdefault(
        request.path, {"requests": 0, "spans": 0, "bytes": 0, "undecodable": 0}
    )
    counts["requests"] += 1
    counts["bytes"] += len(body)
    try:
        if body[:2] == b"\x1f\x8b":  # aiohttp already undoes `content-encoding: gzip`
            body = gzip.decompress(body)
        counts["spans"] += _spans(body)
    except (ValueError, TypeError, AttributeError, OSError, EOFError):
        counts["undecodable"] += 1
    return web.Response(body=b"{}", content_type="application/json")


async def stats(_request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(_stats), content_type="application/json")


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(body=b'{"ok":true}', content_type="application/json")


async def report(_app: web.Application) -> None:
    print("SINK_STATS " + orjson.dumps(_stats).decode(), flush=True)


def main(port: int) -> None:
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_get("/stats", stats)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/{tail:.*}", receive)
    app.on_shutdown.append(report)
    loop: Any = None
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main(int(sys.argv[1]))
