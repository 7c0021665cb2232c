"""OpenAI-compatible client routes: `/v1/chat/completions`, `/v1/completions`,
`/v1/embeddings`, `/v1/models`."""

from __future__ import annotations

from typing import Any

import orjson
from litestar import Request, Response, get, post
from litestar.response import Stream

from gateway.disconnect import run_until_disconnect
from gateway.errors import NotFound
from gateway.providers.base import Endpoint
from gateway.proxy import Proxy, ProxyResponse
from gateway.requestid import request_id_of
from gateway.tenancy import extract_key

__all__ = ["routes"]

AnyRequest = Request[Any, Any, Any]


def _proxy(request: AnyRequest) -> Proxy:
    proxy: Proxy = request.app.state.proxy
    return proxy


def _render(answer: ProxyResponse) -> Response[bytes] | Stream:
    if answer.events is not None:
        return Stream(
            answer.events,
            status_code=answer.status,
            media_type=answer.media_type,
            headers=answer.headers,
        )
    return Response(
        answer.content,
        status_code=answer.status,
        media_type=answer.media_type,
        headers=answer.headers,
    )


async def _forward(request: AnyRequest, endpoint: Endpoint) -> Response[bytes] | Stream:
    raw = await request.body()
    work = _proxy(request).handle(endpoint, raw, request.headers, request_id_of(request.scope))
    return _render(await run_until_disconnect(request.receive, work))


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: AnyRequest) -> Response[bytes] | Stream:
    return await _forward(request, "chat/completions")


@post("/v1/completions", status_code=200)
async def completions(request: AnyRequest) -> Response[bytes] | Stream:
    return await _forward(request, "completions")


@post("/v1/embeddings", status_code=200)
async def embeddings(request: AnyRequest) -> Response[bytes] | Stream:
    return await _forward(request, "embeddings")


def _model_object(name: str, owner: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": owner}


@get("/v1/models")
async def list_models(request: AnyRequest) -> Response[bytes]:
    proxy = _proxy(request)
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
    proxy = _proxy(request)
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
