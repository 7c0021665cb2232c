"""OpenAI-compatible client routes: `/v1/chat/completions`, `/v1/completions`,
`/v1/embeddings`, `/v1/models`.

The three proxy routes are ASGI route handlers (see `gateway.wire`): Litestar routes
them and renders their errors; the body and the answer go through raw ASGI.
"""

from __future__ import annotations

from typing import Any

import orjson
from litestar import Request, Response, asgi, get
from litestar.types import Receive, Scope, Send

from gateway.disconnect import run_until_disconnect
from gateway.errors import MethodNotAllowed, NotFound
from gateway.providers.base import Endpoint
from gateway.proxy import Proxy
from gateway.requestid import request_id_of
from gateway.tenancy import extract_key
from gateway.wire import headers_of, read_body, send_body, send_events

__all__ = ["routes"]

AnyRequest = Request[Any, Any, Any]


async def _forward(scope: Scope, receive: Receive, send: Send, endpoint: Endpoint) -> None:
    if scope["method"] != "POST":  # type: ignore[typeddict-item]
        raise MethodNotAllowed("Method not allowed for this path.", headers={"allow": "POST"})
    proxy: Proxy = scope["app"].state.proxy
    headers = headers_of(scope)
    raw = await read_body(headers, receive, proxy.max_body_bytes)
    work = proxy.handle(endpoint, raw, headers, request_id_of(scope))
    answer = await run_until_disconnect(receive, work)
    if answer.events is None:
        await send_body(send, answer.status, answer.media_type, answer.headers, answer.content)
    else:
        await send_events(
            receive, send, answer.status, answer.media_type, answer.headers, answer.events
        )


@asgi("/v1/chat/completions", copy_scope=False)
async def chat_completions(scope: Scope, receive: Receive, send: Send) -> None:
    await _forward(scope, receive, send, "chat/completions")


@asgi("/v1/completions", copy_scope=False)
async def completions(scope: Scope, receive: Receive, send: Send) -> None:
    await _forward(scope, receive, send, "completions")


@asgi("/v1/embeddings", copy_scope=False)
async def embeddings(scope: Scope, receive: Receive, send: Send) -> None:
    await _forward(scope, receive, send, "embeddings")


def _model_object(name: str, owner: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": owner}


@get("/v1/models")
async def list_models(request: AnyRequest) -> Response[bytes]:
    proxy: Proxy = request.app.state.proxy
    caller = await proxy.auth.authenticate(
        extract_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
    )
    data = [
        _model_object(route.model.name, route.model.provider)
        for route in proxy.router.routes()
        if caller.may_use(route.model.name)
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


@get("/v1/models/{model_id:path}")
async def get_model(request: AnyRequest) -> Response[bytes]:
    proxy: Proxy = request.app.state.proxy
    caller = await proxy.auth.authenticate(
        extract_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
    )
    name = str(request.path_params["model_id"]).lstrip("/")
    route = proxy.router.resolve(name)
    if not caller.may_use(route.model.name):
        raise NotFound("The model does not exist.", param="model", code="model_not_found")
    return Response(
        orjson.dumps(_model_object(route.model.name, route.model.provider)),
        media_type="application/json",
    )


routes = [chat_completions, completions, embeddings, list_models, get_model]
