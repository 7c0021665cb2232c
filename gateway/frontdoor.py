"""The ASGI entry point: request ids for everything, and the proxy routes served directly.

Every response carries `x-request-id`: the client's (if sane) or a fresh one, also
stored in `scope["state"]["request_id"]`. The three proxy routes (`/v1/chat/completions`,
`/v1/completions`, `/v1/embeddings`) are the hot path: they are served here with raw
ASGI (`gateway.wire`), errors rendered by `errors.render()`; every other path goes to the
Litestar app (admin, models, health, OpenAPI). Keeping framework request/response
objects and middleware off the hot path measured about a third of Railgate's own CPU
time per proxied request (bench/RESULTS.md).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from gateway.disconnect import run_until_disconnect
from gateway.errors import GatewayError, MethodNotAllowed, render
from gateway.providers.base import Endpoint
from gateway.proxy import Proxy
from gateway.telemetry.observer import Exchange
from gateway.wire import headers_of, read_body, send_body, send_events

__all__ = ["FrontDoor"]

log = logging.getLogger("railgate")

_MAX_ID_LEN = 128
PROXY_ROUTES: dict[str, Endpoint] = {
    "/v1/chat/completions": "chat/completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}


def _sane(value: bytes) -> bool:
    return 0 < len(value) <= _MAX_ID_LEN and all(0x21 <= b <= 0x7E for b in value)


class FrontDoor:
    def __init__(self, app: ASGIApp, proxy: Proxy) -> None:
        self.app = app
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]
            await self.app(scope, receive, send)
            return
        rid = b""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value
                break
        if not _sane(rid):
            rid = os.urandom(16).hex().encode()
        endpoint = PROXY_ROUTES.get(scope["path"].rstrip("/"))
        if endpoint is not None:
            await self._proxy(scope, receive, send, endpoint, rid.decode())
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = rid.decode()
        began = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"x-request-id"]
                headers.append((b"x-request-id", rid))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.proxy.telemetry.exchanged(
                Exchange(
                    request_id=rid.decode(),
                    method=scope["method"],  # type: ignore[typeddict-item]
                    path=scope["path"],
                    status=status,
                    duration_ms=(time.perf_counter() - began) * 1000,
                    client_ip=_client_ip(scope),
                )
            )

    async def _proxy(
        self, scope: Scope, receive: Receive, send: Send, endpoint: Endpoint, rid: str
    ) -> None:
        started = False
        began = time.perf_counter()

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        client_ip = _client_ip(scope)
        try:
            if scope["method"] != "POST":  # type: ignore[typeddict-item]
                raise MethodNotAllowed(
                    "Method not allowed for this path.", headers={"allow": "POST"}
                )
            headers = headers_of(scope)
            raw = await read_body(headers, receive, self.proxy.max_body_bytes)
        except GatewayError as exc:  # before the proxy saw it: reported here
            self.proxy.telemetry.exchanged(
                Exchange(
                    request_id=rid,
                    method=scope["method"],  # type: ignore[typeddict-item]
                    path=scope["path"],
                    status=exc.status_code,
                    duration_ms=(time.perf_counter() - began) * 1000,
                    client_ip=client_ip,
                    error=exc.code,
                    proxied=True,
                )
            )
            await _send_error(send, exc, rid)
            return
        try:
            answer = await run_until_disconnect(
                receive, self.proxy.handle(endpoint, raw, headers, rid, client_ip)
            )
            answer.headers["x-request-id"] = rid
            if answer.events is None:
                await send_body(
                    send, answer.status, answer.media_type, answer.headers, answer.content
                )
            else:
                await send_events(
                    receive,
                    tracked,
                    answer.status,
                    answer.media_type,
                    answer.headers,
                    answer.events,
                )
        except GatewayError as exc:
            if not started:
                await _send_error(send, exc, rid)
        except Exception as exc:
            log.exception("unhandled error (%s)", type(exc).__name__)
            if not started:
                await _send_error(send, GatewayError("Internal error."), rid)


def _client_ip(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


async def _send_error(send: Send, exc: GatewayError, rid: str) -> None:
    out = render(exc)
    out.headers["x-request-id"] = rid
    await send_body(send, out.status, out.media_type, out.headers, out.body)
