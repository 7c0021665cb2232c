"""Every error a client can meet, through the official SDK and through raw HTTP.

Each row checks the status, the exact OpenAI error shape (`message`, `type`, `param`,
`code`), the `x-request-id` header, that neither keys nor prompt text come back, and,
for calls that reached an upstream, the usage record written for the failure.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import AsyncOpenAI

from gateway.keys import new_key
from gateway.store import MemoryStore, Tenant
from tests.conftest import KEY_ACME, KEY_LIMITED, UPSTREAM_KEY

SECRET = "SECRET-PROMPT-must-not-echo-5f1c"
MESSAGES = [{"role": "user", "content": SECRET}]
AUTH = {"authorization": f"Bearer {KEY_ACME}"}
ANY: Any = object()
POST_ROUTES = ["/chat/completions", "/completions", "/embeddings"]


@pytest.fixture
async def http(gateway: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.v1, timeout=15) as client:
        yield client


@pytest.fixture
async def sdk(gateway: Any) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(
        base_url=gateway.v1, api_key=KEY_ACME, max_retries=0, timeout=15
    ) as client:
        yield client


def new_rid() -> str:
    return f"err-{uuid.uuid4().hex}"


def assert_no_secrets(text: str) -> None:
    for secret in (KEY_ACME, KEY_LIMITED, UPSTREAM_KEY, SECRET):
        assert secret not in text


def assert_shaped(
    resp: httpx.Response,
    status: int,
    code: str,
    *,
    param: Any = ANY,
    type_: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Status, `{"error": {message, type, param, code}}`, x-request-id, nothing echoed."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    rid = resp.headers.get("x-request-id")
    assert rid
    if request_id is not None:
        assert rid == request_id
    body = resp.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert error["code"] == code
    if param is not ANY:
        assert error["param"] == param
    if type_ is not None:
        assert error["type"] == type_
    assert "Traceback" not in resp.text
    assert_no_secrets(resp.text)
    return error  # type: ignore[no-any-return]


def assert_sdk_error(
    exc: openai.APIStatusError, cls: type, status: int, code: str, *, param: Any = ANY
) -> None:
    assert type(exc) is cls, type(exc)
    assert exc.status_code == status
    assert exc.code == code
    if param is not ANY:
        assert exc.param == param
    assert exc.request_id and exc.response.headers["x-request-id"] == exc.request_id
    assert_no_secrets(str(exc))
    assert_no_secrets(exc.response.text)


# ============================================================================ 400


def _body(**fields: Any) -> bytes:
    return orjson.dumps(fields)


BAD_REQUESTS: list[tuple[str, str, bytes, str | None]] = [
    # (id, route, raw body, expected param)
    ("malformed-json", "/chat/completions", b'{"model": "mock-1", "messages": [', None),
    ("not-an-object", "/chat/completions", b'[{"model": "mock-1"}]', None),
    ("string-body", "/completions", b'"mock-1"', None),
    ("messages-string", "/chat/completions", _body(model="mock-1", messages=SECRET), "messages"),
    (
        "stream-string",
        "/chat/completions",
        _body(model="mock-1", messages=MESSAGES, stream="yes"),
        "stream",
    ),
    (
        "max-tokens-string",
        "/chat/completions",
        _body(model="mock-1", messages=MESSAGES, max_tokens="5"),
        "max_tokens",
    ),
    (
        "message-without-role",
        "/chat/completions",
        _body(model="mock-1", messages=[{"content": SECRET}]),
        "messages[0].role",
    ),
    ("missing-model", "/chat/completions", _body(messages=MESSAGES), "model"),
    ("missing-model-embeddings", "/embeddings", _body(input=SECRET), "model"),
    ("missing-messages", "/chat/completions", _body(model="mock-1"), "messages"),
    ("empty-messages", "/chat/completions", _body(model="mock-1", messages=[]), "messages"),
    ("completions-without-prompt", "/completions", _body(model="mock-1", max_tokens=3), "prompt"),
    ("embeddings-without-input", "/embeddings", _body(model="mock-1"), "input"),
    ("binary-garbage", "/chat/completions", bytes(range(256)) * 4, None),
    (
        "non-utf8",
        "/chat/completions",
        b'{"model":"mock-1","messages":[{"role":"user","content":"caf\xe9 \xff"}]}',
        None,
    ),
]
BAD_IDS = [row[0] for row in BAD_REQUESTS]


@pytest.mark.parametrize(("name", "route", "raw", "param"), BAD_REQUESTS, ids=BAD_IDS)
async def test_400_raw(
    http: httpx.AsyncClient, name: str, route: str, raw: bytes, param: str | None
) -> None:
    rid = new_rid()
    resp = await http.post(
        route,
        content=raw,
        headers={**AUTH, "content-type": "application/json", "x-request-id": rid},
    )
    assert_shaped(
        resp, 400, "invalid_request", param=param, type_="invalid_request_error", request_id=rid
    )


@pytest.mark.parametrize(("name", "route", "raw", "param"), BAD_REQUESTS, ids=BAD_IDS)
async def test_400_sdk(
    sdk: AsyncOpenAI, name: str, route: str, raw: bytes, param: str | None
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await sdk.post(
            route,
            cast_to=object,
            content=raw,
            options={"headers": {"content-type": "application/json"}},
        )
    assert_sdk_error(info.value, openai.BadRequestError, 400, "invalid_request", param=param)


async def test_400_through_typed_sdk_methods(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await sdk.chat.completions.create(model="mock-1", messages=[])
    assert_sdk_error(info.value, openai.BadRequestError, 400, "invalid_request", param="messages")
    with pytest.raises(openai.BadRequestError) as info:
        await sdk.chat.completions.create(
            model="mock-1", messages=MESSAGES, extra_body={"max_tokens": "lots"}
        )  # type: ignore[arg-type]
    assert_sdk_error(info.value, openai.BadRequestError, 400, "invalid_request", param="max_tokens")
    with pytest.raises(openai.BadRequestError) as info:
        await sdk.embeddings.create(model="mock-1", input=SECRET, dimensions=-5)
    assert info.value.param == "dimensions"


# ============================================================================ 401


async def _tenant_key(gateway: Any, **key_options: Any) -> tuple[MemoryStore, str, str, str]:
    """A fresh tenant and key in the gateway's own store (memory:// has no loop-bound state)."""
    store = gateway.app.state.store
    assert isinstance(store, MemoryStore)
    tenant_id = f"t-{uuid.uuid4().hex[:8]}"
    await store.put_tenant(Tenant(id=tenant_id, name=tenant_id, created_at=time.time()))
    secret, record = new_key(tenant_id, name="e2e", **key_options)
    await store.put_key(record)
    return store, tenant_id, record.id, secret


async def _chat_status(http: httpx.AsyncClient, key: str) -> httpx.Response:
    return await http.post(
        "/chat/completions",
        json={"model": "mock-1", "messages": MESSAGES},
        headers={"authorization": f"Bearer {key}"},
    )


UNKNOWN_KEY = "rg-unknown-" + "z" * 40
AUTH_HEADERS: list[tuple[str, dict[str, str]]] = [
    ("missing", {}),
    ("unknown-bearer", {"authorization": f"Bearer {UNKNOWN_KEY}"}),
    ("unknown-x-api-key", {"x-api-key": UNKNOWN_KEY}),
    ("basic-scheme", {"authorization": "Basic cmc6c2VjcmV0"}),
    ("bearer-without-value", {"authorization": "Bearer"}),
    ("token-scheme", {"authorization": f"Token {KEY_ACME}"}),
    ("key-without-scheme", {"authorization": KEY_ACME}),
    ("bearer-with-extra-words", {"authorization": f"Bearer {KEY_ACME} extra"}),
    ("empty-x-api-key", {"x-api-key": ""}),
]


@pytest.mark.parametrize("headers", [h for _, h in AUTH_HEADERS], ids=[n for n, _ in AUTH_HEADERS])
@pytest.mark.parametrize("route", POST_ROUTES)
async def test_401_raw(http: httpx.AsyncClient, headers: dict[str, str], route: str) -> None:
    body = {"model": "mock-1", "messages": MESSAGES, "prompt": SECRET, "input": SECRET}
    resp = await http.post(route, json=body, headers=headers)
    assert_shaped(resp, 401, "invalid_api_key", param=None, type_="authentication_error")
    assert UNKNOWN_KEY not in resp.text


async def test_401_before_body_is_even_parsed(http: httpx.AsyncClient) -> None:
    """No key and a broken body: the answer is about the key, and tells nothing about the body."""
    resp = await http.post("/chat/completions", content=b"{not json")
    assert_shaped(resp, 401, "invalid_api_key")


async def test_401_models_list(http: httpx.AsyncClient) -> None:
    assert_shaped(await http.get("/models"), 401, "invalid_api_key")
    assert_shaped(
        await http.get("/models/mock-1", headers={"x-api-key": UNKNOWN_KEY}), 401, "invalid_api_key"
    )


SDK_AUTH_CASES = [
    ("unknown-key", UNKNOWN_KEY, {}),
    ("malformed-header", KEY_ACME, {"Authorization": "Basic cmc6c2VjcmV0"}),
    ("missing-header", KEY_ACME, {"Authorization": openai.omit}),
]


@pytest.mark.parametrize(
    ("api_key", "headers"),
    [(k, h) for _, k, h in SDK_AUTH_CASES],
    ids=[n for n, _, _ in SDK_AUTH_CASES],
)
async def test_401_sdk(gateway: Any, api_key: str, headers: dict[str, Any]) -> None:
    async with AsyncOpenAI(base_url=gateway.v1, api_key=api_key, max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await client.chat.completions.create(
                model="mock-1", messages=MESSAGES, extra_headers=headers
            )
        assert_sdk_error(info.value, openai.AuthenticationError, 401, "invalid_api_key")
        assert info.value.response.request.headers.get("authorization") != f"Bearer {KEY_ACME}"
        with pytest.raises(openai.AuthenticationError):
            await client.models.list(extra_headers=headers)


async def test_401_revoked_key(gateway: Any, http: httpx.AsyncClient) -> None:
    store, tenant_id, key_id, secret = await _tenant_key(gateway)
    ok = await _chat_status(http, secret)
    assert ok.status_code == 200, ok.text
    assert await store.revoke_key(tenant_id, key_id, time.time())
    resp = await _refused_within_a_second(store, http, secret)
    error = assert_shaped(resp, 401, "invalid_api_key", type_="authentication_error")
    assert secret not in resp.text and "revoked" not in error["message"].lower()
    async with AsyncOpenAI(base_url=gateway.v1, api_key=secret, max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await client.chat.completions.create(model="mock-1", messages=MESSAGES)
        assert_sdk_error(info.value, openai.AuthenticationError, 401, "invalid_api_key")
        assert secret not in info.value.response.text


async def test_401_expired_key(gateway: Any, http: httpx.AsyncClient) -> None:
    *_, secret = await _tenant_key(gateway, expires_at=time.time() - 1)
    assert_shaped(await _chat_status(http, secret), 401, "invalid_api_key")


async def test_401_disabled_tenant(gateway: Any, http: httpx.AsyncClient) -> None:
    store, tenant_id, _, secret = await _tenant_key(gateway)
    assert (await _chat_status(http, secret)).status_code == 200
    await store.put_tenant(Tenant(id=tenant_id, disabled=True))
    assert_shaped(await _refused_within_a_second(store, http, secret), 401, "invalid_api_key")


async def _refused_within_a_second(
    store: Any, http: httpx.AsyncClient, secret: str
) -> httpx.Response:
    """A change made in the store (as the admin API does: bump the change counter)
    reaches the gateway's cached view within a second."""
    await store.bump_generation()
    deadline = time.monotonic() + 1.0
    while True:
        resp = await _chat_status(http, secret)
        if resp.status_code != 200 or time.monotonic() > deadline:
            return resp
        await asyncio.sleep(0.02)


# ============================================================================ 403


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/chat/completions", {"model": "gpt-test", "messages": MESSAGES}),
        ("/chat/completions", {"model": "gpt-test", "messages": MESSAGES, "stream": True}),
        ("/completions", {"model": "gpt-test", "prompt": SECRET}),
        ("/embeddings", {"model": "gpt-test", "input": SECRET}),
    ],
)
async def test_403_model_not_allowed_raw(
    http: httpx.AsyncClient, fresh_upstream: Any, route: str, body: dict[str, Any]
) -> None:
    resp = await http.post(route, json=body, headers={"authorization": f"Bearer {KEY_LIMITED}"})
    assert_shaped(resp, 403, "model_not_allowed", param="model", type_="permission_error")
    assert fresh_upstream.received == []  # refused before anything left the gateway


async def test_403_model_not_allowed_sdk(gateway: Any) -> None:
    async with AsyncOpenAI(base_url=gateway.v1, api_key=KEY_LIMITED, max_retries=0) as client:
        with pytest.raises(openai.PermissionDeniedError) as info:
            await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        assert_sdk_error(
            info.value, openai.PermissionDeniedError, 403, "model_not_allowed", param="model"
        )
        # the same key may use its allowed model
        ok = await client.chat.completions.create(model="mock-1", messages=MESSAGES)
        assert ok.choices[0].message.content


# ============================================================================ 404


@pytest.mark.parametrize("route", POST_ROUTES)
async def test_404_unknown_model_raw(
    http: httpx.AsyncClient, fresh_upstream: Any, route: str
) -> None:
    body = {"model": "no-such-model", "messages": MESSAGES, "prompt": SECRET, "input": SECRET}
    resp = await http.post(route, json=body, headers=AUTH)
    error = assert_shaped(resp, 404, "model_not_found", param="model", type_="not_found_error")
    assert "no-such-model" not in error["message"]
    assert fresh_upstream.received == []


async def test_404_unknown_model_sdk(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await sdk.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert_sdk_error(info.value, openai.NotFoundError, 404, "model_not_found", param="model")
    with pytest.raises(openai.NotFoundError) as info:
        await sdk.models.retrieve("no-such-model")
    assert_sdk_error(info.value, openai.NotFoundError, 404, "model_not_found", param="model")


async def test_404_model_hidden_from_limited_key(gateway: Any) -> None:
    async with AsyncOpenAI(base_url=gateway.v1, api_key=KEY_LIMITED, max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.models.retrieve("gpt-test")
        assert_sdk_error(info.value, openai.NotFoundError, 404, "model_not_found")


UNKNOWN_PATHS = [
    "/v1/nope",
    "/v1/chat/completion",
    "/v1/chat/completions/extra",
    "/v1/engines/x/completions",
    "/v2/chat/completions",
    "/",
    "/v1/messagesx",
]


@pytest.mark.parametrize("path", UNKNOWN_PATHS)
@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_404_unknown_path_raw(gateway: Any, path: str, method: str) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as client:
        resp = await client.request(
            method, path, headers=AUTH, json={"model": "mock-1", "messages": MESSAGES}
        )
    assert_shaped(resp, 404, "not_found", param=None, type_="not_found_error")


async def test_404_unknown_path_sdk(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await sdk.post("/nope", cast_to=object, body={"model": "mock-1", "messages": MESSAGES})
    assert_sdk_error(info.value, openai.NotFoundError, 404, "not_found")


# ============================================================================ 405


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/chat/completions"),
        ("GET", "/completions"),
        ("GET", "/embeddings"),
        ("PUT", "/chat/completions"),
        ("DELETE", "/chat/completions"),
        ("PATCH", "/embeddings"),
        ("POST", "/models"),
    ],
)
async def test_405_raw(http: httpx.AsyncClient, method: str, path: str) -> None:
    resp = await http.request(method, path, headers=AUTH)
    assert_shaped(resp, 405, "method_not_allowed", param=None)


async def test_405_sdk(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        await sdk.get("/chat/completions", cast_to=object)
    assert_sdk_error(info.value, openai.APIStatusError, 405, "method_not_allowed")


# ============================================================================ 413


def _big_chat(size: int) -> dict[str, Any]:
    return {"model": "mock-1", "messages": [{"role": "user", "content": SECRET + "x" * size}]}


async def test_413_raw(http: httpx.AsyncClient, gateway: Any) -> None:
    limit = gateway.settings.server.max_body_bytes
    assert limit == 65536
    resp = await http.post("/chat/completions", json=_big_chat(limit), headers=AUTH)
    assert_shaped(resp, 413, "request_too_large", param=None)


async def test_413_without_content_length(http: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model":"mock-1","messages":[{"role":"user","content":"'
        for _ in range(20):
            yield b"y" * 8192
        yield b'"}]}'

    resp = await http.post("/chat/completions", content=chunks(), headers=AUTH)
    assert "content-length" not in resp.request.headers
    assert_shaped(resp, 413, "request_too_large")


async def test_413_sdk(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        await sdk.chat.completions.create(model="mock-1", messages=_big_chat(70_000)["messages"])
    assert_sdk_error(info.value, openai.APIStatusError, 413, "request_too_large")


async def test_huge_body_does_not_hurt_the_server(http: httpx.AsyncClient) -> None:
    huge = b'{"model":"mock-1","messages":[{"role":"user","content":"' + b"z" * 30_000_000
    resp = await http.post("/chat/completions", content=huge, headers=AUTH)
    assert_shaped(resp, 413, "request_too_large")
    # the same client (connection pool) and a brand-new one both still get answers
    again = await http.post(
        "/chat/completions", json={"model": "mock-1", "messages": MESSAGES}, headers=AUTH
    )
    assert again.status_code == 200
    async with httpx.AsyncClient(base_url=str(http.base_url), timeout=15) as other:
        fresh = await other.post(
            "/chat/completions", json={"model": "mock-1", "messages": MESSAGES}, headers=AUTH
        )
    assert fresh.status_code == 200


async def test_body_just_under_the_limit_is_served(
    http: httpx.AsyncClient, fresh_upstream: Any
) -> None:
    text = "q" * 60_000  # a 60 KB string within the 64 KiB limit
    resp = await http.post(
        "/chat/completions",
        headers=AUTH,
        json={"model": "gpt-test", "messages": [{"role": "user", "content": text}]},
    )
    assert resp.status_code == 200
    assert fresh_upstream.last().json["messages"][0]["content"] == text
    mock = await http.post(
        "/chat/completions",
        headers=AUTH,
        json={"model": "mock-1", "messages": [{"role": "user", "content": text}]},
    )
    assert mock.status_code == 200
    assert mock.json()["choices"][0]["message"]["content"].startswith("mock-1 heard: qqq")


# ============================================================================ upstream 4xx


UPSTREAM_BODY = {
    "error": {
        "message": "upstream says no",
        "type": "invalid_request_error",
        "param": None,
        "code": "upstream_code",
    }
}
UPSTREAM_4XX = [
    (400, openai.BadRequestError),
    (404, openai.NotFoundError),
    (422, openai.UnprocessableEntityError),
    (429, openai.RateLimitError),
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("status", "cls"), UPSTREAM_4XX, ids=[str(s) for s, _ in UPSTREAM_4XX])
async def test_upstream_4xx_passed_through_raw(
    http: httpx.AsyncClient, gateway: Any, status: int, cls: type, stream: bool
) -> None:
    rid = new_rid()
    resp = await http.post(
        "/chat/completions",
        headers={**AUTH, "x-request-id": rid},
        json={"model": f"status-{status}", "messages": MESSAGES, "stream": stream},
    )
    assert_shaped(resp, status, "upstream_code", request_id=rid)
    assert resp.json() == UPSTREAM_BODY  # body as the upstream sent it
    if status == 429:
        assert resp.headers["retry-after"] == "7"
    else:
        assert "retry-after" not in resp.headers
    record = gateway.sink.wait_for(rid)
    assert (record.status, record.error) == (status, "upstream_status")
    assert record.tenant_id == "acme" and record.model == f"status-{status}"
    assert record.stream is stream


@pytest.mark.parametrize(("status", "cls"), UPSTREAM_4XX, ids=[str(s) for s, _ in UPSTREAM_4XX])
async def test_upstream_4xx_passed_through_sdk(
    sdk: AsyncOpenAI, gateway: Any, status: int, cls: type
) -> None:
    with pytest.raises(cls) as info:
        await sdk.chat.completions.create(model=f"status-{status}", messages=MESSAGES)
    exc = info.value
    assert_sdk_error(exc, cls, status, "upstream_code")
    assert exc.message.endswith("upstream says no") or "upstream says no" in str(exc)
    if status == 429:
        assert exc.response.headers["retry-after"] == "7"
    record = gateway.sink.wait_for(exc.request_id)
    assert record.status == status


async def test_upstream_4xx_on_completions_and_embeddings(
    http: httpx.AsyncClient, gateway: Any
) -> None:
    for route, body in [("/completions", {"prompt": SECRET}), ("/embeddings", {"input": SECRET})]:
        rid = new_rid()
        resp = await http.post(
            route, headers={**AUTH, "x-request-id": rid}, json={"model": "status-422", **body}
        )
        assert_shaped(resp, 422, "upstream_code", request_id=rid)
        assert gateway.sink.wait_for(rid).status == 422


# ============================================================================ 502 / 504


UPSTREAM_FAILURES = [
    ("status-500", 502, "upstream_error"),
    ("status-503", 502, "upstream_error"),
    ("dead-model", 502, "upstream_error"),
    ("garbage", 502, "upstream_error"),
    ("slow", 504, "upstream_timeout"),
]


@pytest.mark.parametrize(
    ("model", "status", "code"), UPSTREAM_FAILURES, ids=[m for m, _, _ in UPSTREAM_FAILURES]
)
async def test_upstream_failure_raw(
    http: httpx.AsyncClient, gateway: Any, model: str, status: int, code: str
) -> None:
    rid = new_rid()
    started = time.monotonic()
    resp = await http.post(
        "/chat/completions",
        headers={**AUTH, "x-request-id": rid},
        json={"model": model, "messages": MESSAGES},
    )
    elapsed = time.monotonic() - started
    error = assert_shaped(resp, status, code, param=None, request_id=rid)
    assert error["type"] == ("timeout_error" if status == 504 else "upstream_error")
    assert "<html>" not in resp.text and "upstream says no" not in resp.text
    if model == "slow":
        assert 0.8 < elapsed < 1.9  # the 1 s upstream timeout, not the 2 s upstream delay
    record = gateway.sink.wait_for(rid)
    assert (record.status, record.error) == (status, code)
    assert record.prompt_tokens == record.completion_tokens == record.cost_micro_usd == 0


@pytest.mark.parametrize(
    ("model", "status", "code"), UPSTREAM_FAILURES, ids=[m for m, _, _ in UPSTREAM_FAILURES]
)
async def test_upstream_failure_sdk(
    sdk: AsyncOpenAI, gateway: Any, model: str, status: int, code: str
) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        await sdk.chat.completions.create(model=model, messages=MESSAGES)
    assert_sdk_error(info.value, openai.InternalServerError, status, code, param=None)
    record = gateway.sink.wait_for(info.value.request_id)
    assert (record.status, record.error) == (status, code)


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [
        ("status-500", 502, "upstream_error"),
        ("dead-model", 502, "upstream_error"),
        ("slow", 504, "upstream_timeout"),
    ],
)
async def test_stream_failure_before_first_byte_is_an_http_error(
    http: httpx.AsyncClient, sdk: AsyncOpenAI, gateway: Any, model: str, status: int, code: str
) -> None:
    rid = new_rid()
    resp = await http.post(
        "/chat/completions",
        headers={**AUTH, "x-request-id": rid},
        json={"model": model, "messages": MESSAGES, "stream": True},
    )
    assert_shaped(resp, status, code, request_id=rid)
    record = gateway.sink.wait_for(rid)
    assert (record.status, record.error, record.stream) == (status, code, True)
    with pytest.raises(openai.InternalServerError) as info:
        await sdk.chat.completions.create(model=model, messages=MESSAGES, stream=True)
    assert_sdk_error(info.value, openai.InternalServerError, status, code)


@pytest.mark.parametrize("route", ["/completions", "/embeddings"])
async def test_upstream_failure_on_other_routes(http: httpx.AsyncClient, route: str) -> None:
    body = {"prompt": SECRET, "input": SECRET}
    assert_shaped(
        await http.post(route, headers=AUTH, json={"model": "status-503", **body}),
        502,
        "upstream_error",
    )
    assert_shaped(
        await http.post(route, headers=AUTH, json={"model": "dead-model", **body}),
        502,
        "upstream_error",
    )


# ============================================================================ mid-stream drop


def _events(raw: bytes) -> list[bytes]:
    return [e for e in raw.split(b"\n\n") if e.strip()]


async def test_mid_stream_drop_raw(http: httpx.AsyncClient, gateway: Any) -> None:
    rid = new_rid()
    async with http.stream(
        "POST",
        "/chat/completions",
        headers={**AUTH, "x-request-id": rid},
        json={"model": "drop", "messages": MESSAGES, "stream": True},
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["x-request-id"] == rid
        raw = b"".join([part async for part in resp.aiter_bytes()])
    events = _events(raw)
    assert len(events) >= 3
    chunks = [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "one "
    last = events[-1]
    assert last.startswith(b"data: ")
    payload = orjson.loads(last.removeprefix(b"data: "))
    assert list(payload) == ["error"]
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    assert payload["error"]["code"] == "upstream_error"
    assert b"[DONE]" not in raw
    assert_no_secrets(raw.decode())
    record = gateway.sink.wait_for(rid)
    assert (record.status, record.error, record.stream) == (502, "upstream_error", True)
    assert record.ttft_ms is not None


async def test_mid_stream_drop_sdk(sdk: AsyncOpenAI, gateway: Any) -> None:
    stream = await sdk.chat.completions.create(model="drop", messages=MESSAGES, stream=True)
    got: list[str] = []
    with pytest.raises(openai.APIError) as info:
        async for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "one "
    assert info.value.code == "upstream_error"
    assert not isinstance(info.value, openai.APIStatusError)  # status was 200 already
    record = gateway.sink.wait_for(stream.response.headers["x-request-id"])
    assert (record.status, record.error) == (502, "upstream_error")


async def test_garbage_answer_to_a_stream_is_an_error(
    http: httpx.AsyncClient, gateway: Any
) -> None:
    rid = new_rid()
    async with http.stream(
        "POST",
        "/chat/completions",
        headers={**AUTH, "x-request-id": rid},
        json={"model": "garbage", "messages": MESSAGES, "stream": True},
    ) as resp:
        raw = b"".join([part async for part in resp.aiter_bytes()])
    assert b"<html>" not in raw
    if resp.status_code == 200:  # ended with an error event after the headers …
        payload = orjson.loads(_events(raw)[-1].removeprefix(b"data: "))
        assert payload["error"]["code"] == "upstream_error"
    else:  # … or refused before them
        assert resp.status_code == 502
    assert gateway.sink.wait_for(rid).status == 502


# ============================================================================ odd but legal input


def _deep_chat(model: str, depth: int) -> bytes:
    return (
        b'{"model":"%s","messages":[{"role":"user","content":"x"}],"x_deep":' % model.encode()
        + b"[" * depth
        + b"]" * depth
        + b"}"
    )


@pytest.mark.parametrize("depth", [300, 900, 1000, 1023, 5000])
@pytest.mark.parametrize("model", ["gpt-test", "mock-1"])
async def test_huge_nesting_depth_is_a_400_not_a_500(
    http: httpx.AsyncClient, fresh_upstream: Any, model: str, depth: int
) -> None:
    resp = await http.post("/chat/completions", content=_deep_chat(model, depth), headers=AUTH)
    assert_shaped(resp, 400, "invalid_request", param=None)
    assert fresh_upstream.received == []


async def test_moderate_nesting_is_forwarded_intact(
    http: httpx.AsyncClient, fresh_upstream: Any
) -> None:
    resp = await http.post("/chat/completions", content=_deep_chat("gpt-test", 120), headers=AUTH)
    assert resp.status_code == 200
    assert fresh_upstream.last().json["x_deep"] == orjson.loads(b"[" * 120 + b"]" * 120)


@pytest.mark.parametrize("text", [5, None])
async def test_non_string_text_part_for_mock_model_is_not_a_500(
    http: httpx.AsyncClient, text: Any
) -> None:
    resp = await http.post(
        "/chat/completions",
        headers=AUTH,
        json={
            "model": "mock-1",
            "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
        },
    )
    assert resp.status_code < 500


# ============================================================================ fuzz: never a 500


VALIDISH = b'"model":"mock-1","messages":[{"role":"user","content":"x"}],"prompt":"x","input":"x"'
FUZZ: list[tuple[str, bytes, str | None]] = [
    # (id, body, content-type; None = no content-type header)
    ("empty", b"", "application/json"),
    ("empty-no-ct", b"", None),
    ("whitespace", b"  \r\n\t ", "application/json"),
    ("null", b"null", "application/json"),
    ("true", b"true", "application/json"),
    ("zero", b"0", "application/json"),
    ("float", b"-1.5e308", "application/json"),
    ("overflow-float", b"1e999", "application/json"),
    ("nan", b"NaN", "application/json"),
    ("string", b'"x"', "application/json"),
    ("empty-array", b"[]", "application/json"),
    ("array-of-body", b"[{" + VALIDISH + b"}]", "application/json"),
    ("empty-object", b"{}", "application/json"),
    ("truncated", b"{" + VALIDISH, "application/json"),
    ("trailing-comma", b"{" + VALIDISH + b",}", "application/json"),
    ("single-quotes", b"{'model': 'mock-1'}", "application/json"),
    ("two-objects", b"{" + VALIDISH + b"}{}", "application/json"),
    ("model-null", b'{"model":null,' + VALIDISH[17:] + b"}", "application/json"),
    ("model-object", b'{"model":{},' + VALIDISH[17:] + b"}", "application/json"),
    ("model-empty", b'{"model":"",' + VALIDISH[17:] + b"}", "application/json"),
    ("model-nan", b'{"model":NaN}', "application/json"),
    ("user-int", b"{" + VALIDISH + b',"user":5}', "application/json"),
    (
        "all-wrong-types",
        b'{"model":"mock-1","messages":{},"prompt":{},"input":{}}',
        "application/json",
    ),
    (
        "nulls-inside",
        b'{"model":"mock-1","messages":[null],"prompt":null,"input":null}',
        "application/json",
    ),
    (
        "lone-surrogate",
        b'{"model":"mock-1","messages":[{"role":"user","content":"\\ud800"}],'
        b'"prompt":"\\udfff","input":"\\ud800"}',
        "application/json",
    ),
    ("bom", b"\xef\xbb\xbf{" + VALIDISH + b',"user":[]}', "application/json"),
    ("nul-bytes", b"\x00" * 64, "application/octet-stream"),
    ("random-bytes", bytes(range(255, -1, -1)) * 8, "application/octet-stream"),
    ("too-deep", b'{"model":"mock-1","x":' + b"[" * 3000 + b"]" * 3000 + b"}", "application/json"),
    (
        "deep-object",
        b'{"model":"mock-1","user":' + b'{"a":' * 400 + b"1" + b"}" * 400 + b"}",
        "application/json",
    ),
    (
        "form-urlencoded",
        b"model=mock-1&messages=x&prompt=x&input=x",
        "application/x-www-form-urlencoded",
    ),
    (
        "multipart",
        b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nmock-1\r\n--b--\r\n',
        "multipart/form-data; boundary=b",
    ),
    ("xml", b"<request><model>mock-1</model></request>", "application/xml"),
    ("text-plain-garbage", b"hello gateway", "text/plain"),
]


@pytest.mark.parametrize("route", POST_ROUTES)
@pytest.mark.parametrize(
    ("body", "content_type"), [(b, c) for _, b, c in FUZZ], ids=[n for n, _, _ in FUZZ]
)
async def test_fuzz_never_a_500(
    http: httpx.AsyncClient, route: str, body: bytes, content_type: str | None
) -> None:
    headers = dict(AUTH)
    if content_type is not None:
        headers["content-type"] = content_type
    resp = await http.post(route, content=body, headers=headers)
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)
    assert_shaped(resp, resp.status_code, resp.json()["error"]["code"])
    assert resp.json()["error"]["type"] == "invalid_request_error"


async def test_server_healthy_after_fuzz(http: httpx.AsyncClient) -> None:
    for route in POST_ROUTES:
        resp = await http.post(
            route,
            headers=AUTH,
            json={"model": "mock-1", "messages": MESSAGES, "prompt": "p", "input": "i"},
        )
        assert resp.status_code == 200, (route, resp.text)
