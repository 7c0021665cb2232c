"""Every response carries `x-request-id`: the client's (if sane) or a fresh one.

A plain ASGI wrapper around the whole app, so that routing errors (404/405) and
framework errors carry the id too. The id is put in `scope["state"]["request_id"]`.
"""

from __future__ import annotations

import os
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestIdMiddleware", "request_id_of"]

_MAX_LEN = 128


def _sane(value: bytes) -> bool:
    return 0 < len(value) <= _MAX_LEN and all(0x21 <= b <= 0x7E for b in value)


def request_id_of(scope: Any) -> str:
    state: dict[str, Any] = scope.get("state") or {}
    return str(state.get("request_id", ""))


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = rid.decode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"x-request-id"]
                headers.append((b"x-request-id", rid))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)
