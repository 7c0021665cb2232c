"""OpenAI-compatible model listing: `/v1/models`, `/v1/models/{id}`.

The proxy routes themselves (`/v1/chat/completions`, `/v1/completions`,
`/v1/embeddings`) are the hot path and are served by `gateway.frontdoor`.
"""

from __future__ import annotations

from typing import Any

import orjson
from litestar import Request, Response, get

from gateway.errors import NotFound
from gateway.proxy import Proxy
from gateway.tenancy import Caller, extract_key

__all__ = ["routes"]

AnyRequest = Request[Any, Any, Any]


async def _caller(proxy: Proxy, request: AnyRequest) -> Caller:
    return await proxy.auth.authenticate(
        extract_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
    )


def _model_object(name: str, owner: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": owner}


@get("/v1/models")
async def list_models(request: AnyRequest) -> Response[bytes]:
    proxy: Proxy = request.app.state.proxy
    caller = await _caller(proxy, request)
    data = [
        _model_object(route.model.name, route.model.provider)
        for route in proxy.router.routes()
        if caller.may_use(route.model.name)
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


@get("/v1/models/{model_id:path}")
async def get_model(request: AnyRequest) -> Response[bytes]:
    proxy: Proxy = request.app.state.proxy
    caller = await _caller(proxy, request)
    name = str(request.path_params["model_id"]).lstrip("/")
    route = proxy.router.resolve(name)
    if not caller.may_use(route.model.name):
        raise NotFound("The model does not exist.", param="model", code="model_not_found")
    return Response(
        orjson.dumps(_model_object(route.model.name, route.model.provider)),
        media_type="application/json",
    )


routes = [list_models, get_model]
