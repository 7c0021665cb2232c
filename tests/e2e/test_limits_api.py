"""Rate limits and budgets as clients meet them: headers, 429s, retries, leases, fail modes.

Every test runs a real gateway (uvicorn on loopback) in front of real fake upstreams and
talks to it with raw httpx and the official `openai` SDK. Store-independent behaviour
runs on `memory://` and on the local Redis (a unique key prefix, removed afterwards);
the fail-mode tests start their own `redis-server`, then kill it or stop it (SIGSTOP).

The token reservation of the standard request below is exact: prompt estimate
3 (reply priming) + 4 (one message) + ceil(len("hi") / 4) = 8, plus `max_tokens` 16.
"""

from __future__ import annotations

import asyncio
import calendar
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import redis
from openai import AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from gateway.config import ConfigError, parse_settings
from gateway.keys import hash_key
from tests.clients import streamed_chat
from tests.conftest import (
    REDIS_URL,
    UPSTREAM_KEY,
    UPSTREAM_KEY_ENV,
    Gateway,
    gateway_config,
    start_gateway,
)
from tests.fakes import FakeUpstream
from tests.limited_upstream import LimitedUpstream
from tests.local_redis import OwnRedis, own_redis_server, redis_prefix
from tests.servers import ServerThread

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
MAX_TOKENS = 16
RESERVED = 3 + 4 + 1 + MAX_TOKENS
"""Tokens the standard request reserves at admission (see the module docstring)."""
FAKE_USAGE = 11 + 4
"""Tokens the session fake upstream reports for every answer (streamed or not)."""
LIMITED_USAGE = (1000, 500)
LIMITED_COST = 1000 * 2.5 + 500 * 10.0
"""Micro-USD of one `lim-gpt` answer: 1000 prompt + 500 completion tokens at 2.5/10 USD/Mtok."""


# ============================================================================ plumbing


@dataclass
class Limited:
    fake: LimitedUpstream
    url: str


@pytest.fixture(scope="module")
def limited_server() -> Iterator[Limited]:
    fake = LimitedUpstream()
    with ServerThread(fake) as server:
        yield Limited(fake, server.url)


@pytest.fixture
def limited(limited_server: Limited) -> Limited:
    limited_server.fake.reset()
    return limited_server


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """`memory://`, or the local Redis under a unique prefix whose keys are removed after."""
    if request.param == "memory":
        yield "memory://"
        return
    with redis_prefix("rgtest-lim") as prefix:
        yield f"{REDIS_URL}?prefix={prefix}"


def new_secret(label: str) -> str:
    return f"rg-{label}-{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"


def tenant(tenant_id: str, *keys: str | tuple[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A config tenant entry; a key is its secret, or (secret, key limits)."""
    entries = []
    for i, key in enumerate(keys):
        secret, limits = key if isinstance(key, tuple) else (key, None)
        entry: dict[str, Any] = {"name": f"{tenant_id}-{i}", "key_sha256": hash_key(secret)}
        if limits is not None:
            entry["limits"] = limits
        entries.append(entry)
    return {"id": tenant_id, "keys": entries, **extra}


def config(
    upstream: FakeUpstream,
    store: str,
    tenants: list[dict[str, Any]],
    limited: Limited | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    raw = gateway_config(upstream.url, store=store, tenants=tenants, **overrides)  # type: ignore[attr-defined]
    # The `hang` models wait for the client to leave: no upstream read timeout may end
    # them first, or a released lease could not be told from a timed-out call.
    raw["providers"][1]["timeout_s"] = 30.0
    if limited is not None:
        raw["providers"].append(
            {
                "name": "lim",
                "type": "openai",
                "base_url": limited.url + "/v1",
                "api_key_env": UPSTREAM_KEY_ENV,
                "timeout_s": 30.0,
            }
        )
        raw["models"].append(
            {
                "name": "lim-gpt",
                "provider": "lim",
                "input_price_per_mtok": 2.5,
                "output_price_per_mtok": 10.0,
            }
        )
    return raw


@contextmanager
def serving(raw: dict[str, Any]) -> Iterator[Gateway]:
    server, gw = start_gateway(raw, {UPSTREAM_KEY_ENV: UPSTREAM_KEY})
    with server:
        yield gw


@asynccontextmanager
async def sdk_client(gw: Gateway, key: str, **options: Any) -> AsyncIterator[AsyncOpenAI]:
    options.setdefault("max_retries", 0)
    async with AsyncOpenAI(base_url=gw.v1, api_key=key, timeout=10, **options) as client:
        yield client


def body(model: str = "echo", stream: bool = False, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
    if stream:
        out["stream"] = True
    return {**out, **extra}


async def chat(http: httpx.AsyncClient, gw: Gateway, key: str, **fields: Any) -> httpx.Response:
    """One raw chat call (streamed calls are read to the end)."""
    resp = await http.post(
        gw.v1 + "/chat/completions",
        json=body(**fields),
        headers={"authorization": f"Bearer {key}", "x-request-id": f"lim-{uuid.uuid4().hex}"},
    )
    if fields.get("stream") and resp.status_code == 200:
        assert resp.text.endswith("data: [DONE]\n\n"), resp.text
    return resp


async def metric(http: httpx.AsyncClient, gw: Gateway, name: str, kind: str = "") -> int:
    text = (await http.get(gw.url + "/metrics")).text
    series = f'{name}{{kind="{kind}"}}' if kind else name
    for line in text.splitlines():
        if line.startswith(series + " "):
            return int(line.rsplit(" ", 1)[1])
    return 0


async def settled(gw: Gateway, resp: httpx.Response | str) -> Any:
    """Wait for the usage record of a call: it is written after the limiter settled it."""
    rid = resp if isinstance(resp, str) else resp.headers["x-request-id"]
    return await asyncio.to_thread(gw.sink.wait_for, rid)


def duration_ms(value: str) -> float:
    """OpenAI's reset format (`250ms`, `1.5s`, `1m0s`) in milliseconds."""
    match = re.fullmatch(r"(?:(\d+)m)?(\d+(?:\.\d+)?)(ms|s)", value)
    assert match, f"bad duration {value!r}"
    minutes, number, unit = match.groups()
    ms = float(number) * (1 if unit == "ms" else 1000)
    return ms + int(minutes or 0) * 60_000


def assert_limit_headers(
    headers: httpx.Headers | Any,
    requests: tuple[int, int] | None,
    tokens: tuple[int, int] | None,
    *,
    fresh: bool = False,
) -> None:
    """(limit, remaining) of both trios; `fresh`: the window's first entry is this call."""
    for unit, pair in (("requests", requests), ("tokens", tokens)):
        if pair is None:
            for what in ("limit", "remaining", "reset"):
                assert f"x-ratelimit-{what}-{unit}" not in headers
            continue
        assert headers[f"x-ratelimit-limit-{unit}"] == str(pair[0])
        assert headers[f"x-ratelimit-remaining-{unit}"] == str(pair[1])
        reset = headers[f"x-ratelimit-reset-{unit}"]
        if fresh:
            assert reset == "1m0s"
        else:
            assert 50_000 < duration_ms(reset) <= 60_000, reset


def assert_error(resp: httpx.Response, status: int, type_: str, code: str) -> str:
    """Status and the exact OpenAI error shape; returns the message."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers.get("x-request-id")
    error = resp.json()["error"]
    assert set(resp.json()) == {"error"}
    assert error == {"message": error["message"], "type": type_, "param": None, "code": code}
    assert isinstance(error["message"], str) and error["message"]
    return str(error["message"])


def assert_retry_headers(resp: httpx.Response, max_s: int) -> int:
    """`Retry-After` (whole seconds ≥ 1) and `retry-after-ms` agree; returns the ms."""
    seconds, ms = resp.headers["retry-after"], resp.headers["retry-after-ms"]
    assert seconds.isdigit() and ms.isdigit(), (seconds, ms)
    assert 1 <= int(seconds) <= max_s
    assert 1 <= int(ms) <= max_s * 1000
    assert int(seconds) == max(1, math.ceil(int(ms) / 1000))
    assert resp.headers["x-should-retry"] == "true"
    return int(ms)


async def eventually(
    probe: Any, *, within: float, every: float = 0.05
) -> tuple[httpx.Response, float]:
    """Call `probe()` until it returns a response it accepts; (response, seconds taken)."""
    started = time.monotonic()
    while True:
        resp, ok = await probe()
        if ok:
            return resp, time.monotonic() - started
        if time.monotonic() - started >= within:
            raise AssertionError(
                f"not within {within} s; last answer {resp.status_code}: {resp.text}"
            )
        await asyncio.sleep(every)


# ============================================================================ 1. headers


async def test_headers_count_down_on_every_answer(upstream: FakeUpstream, store_url: str) -> None:
    key, free_key = new_secret("hdr"), new_secret("free")
    tenants = [
        tenant("hdr", key, limits={"rpm": 5, "tpm": 10_000}),
        tenant("free", free_key),
    ]
    with serving(config(upstream, store_url, tenants)) as gw:
        async with httpx.AsyncClient(timeout=10) as http, sdk_client(gw, key) as sdk:
            # 1: raw, not streamed; the window's first entry is this very call
            first = await chat(http, gw, key)
            assert first.status_code == 200, first.text
            assert_limit_headers(first.headers, (5, 4), (10_000, 10_000 - RESERVED), fresh=True)
            assert (await settled(gw, first)).prompt_tokens == 11
            # 2: raw, streamed; the first call's reservation was settled to its real usage
            second = await chat(http, gw, key, stream=True)
            assert second.status_code == 200
            assert second.headers["content-type"].startswith("text/event-stream")
            used = FAKE_USAGE
            assert_limit_headers(second.headers, (5, 3), (10_000, 10_000 - used - RESERVED))
            await settled(gw, second)
            # 3: the SDK, not streamed
            used += FAKE_USAGE
            raw = await sdk.chat.completions.with_raw_response.create(
                model="echo", messages=MESSAGES, max_tokens=MAX_TOKENS
            )
            assert raw.parse().choices[0].message.content == "hi"
            assert_limit_headers(raw.headers, (5, 2), (10_000, 10_000 - used - RESERVED))
            await settled(gw, raw.headers["x-request-id"])
            # 4: the SDK, streamed
            used += FAKE_USAGE
            raw_stream = await sdk.chat.completions.with_raw_response.create(
                model="echo", messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True
            )
            assert_limit_headers(raw_stream.headers, (5, 1), (10_000, 10_000 - used - RESERVED))
            text = ""
            chunks: AsyncStream[ChatCompletionChunk] = raw_stream.parse()
            async for chunk in chunks:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
            assert text == "hi"
            await settled(gw, raw_stream.headers["x-request-id"])

            # a tenant without limits gets none of the headers, streamed or not
            for stream in (False, True):
                plain = await chat(http, gw, free_key, stream=stream)
                assert plain.status_code == 200
                assert not [h for h in plain.headers if h.startswith("x-ratelimit")]
                assert "retry-after" not in plain.headers
            async with sdk_client(gw, free_key) as free_sdk:
                raw_free = await free_sdk.chat.completions.with_raw_response.create(
                    model="echo", messages=MESSAGES
                )
            assert not [h for h in raw_free.headers if h.startswith("x-ratelimit")]

    if store_url.startswith("redis://"):
        # the counts really live in Redis: one window entry per admitted call
        prefix = store_url.split("prefix=")[1]
        client = redis.Redis.from_url(REDIS_URL)
        try:
            assert client.zcard(f"{prefix}:{{hdr}}:rl:t:rpm") == 4
            assert int(client.get(f"{prefix}:{{hdr}}:rl:t:tpm:n") or 0) == 4 * FAKE_USAGE
            assert not list(client.scan_iter(match=f"{prefix}:{{free}}:rl:*"))
        finally:
            client.close()


# ============================================================================ 2. 429


async def test_429_shape_raw_and_sdk(fresh_upstream: FakeUpstream, store_url: str) -> None:
    key = new_secret("shape")
    with serving(
        config(fresh_upstream, store_url, [tenant("shape", key, limits={"rpm": 2})])
    ) as gw:
        async with httpx.AsyncClient(timeout=10) as http, sdk_client(gw, key) as sdk:
            for remaining in (1, 0):
                ok = await chat(http, gw, key)
                assert ok.status_code == 200
                assert ok.headers["x-ratelimit-remaining-requests"] == str(remaining)
            refused = await chat(http, gw, key)
            message = assert_error(refused, 429, "rate_limit_error", "rate_limit_exceeded")
            ms = assert_retry_headers(refused, max_s=60)
            assert ms > 55_000  # the oldest of the two calls leaves the minute in ~60 s
            retry_s = refused.headers["retry-after"]
            assert message == (
                f"Rate limit reached for requests per minute: limit 2, in use 2."
                f" Retry after {retry_s} s."
            )
            assert refused.headers["x-ratelimit-limit-requests"] == "2"
            assert refused.headers["x-ratelimit-remaining-requests"] == "0"
            assert 55_000 < duration_ms(refused.headers["x-ratelimit-reset-requests"]) <= 60_000

            with pytest.raises(openai.RateLimitError) as info:
                await sdk.chat.completions.create(model="echo", messages=MESSAGES)
            exc = info.value
            assert exc.status_code == 429
            assert exc.code == "rate_limit_exceeded" and exc.type == "rate_limit_error"
            assert "requests per minute" in exc.message
            assert exc.response.headers["x-should-retry"] == "true"

            with pytest.raises(openai.RateLimitError):  # streamed: refused before the stream
                await sdk.chat.completions.create(model="echo", messages=MESSAGES, stream=True)

            assert await metric(http, gw, "railgate_limits_rejected_total", "requests") == 3
    with fresh_upstream.lock:
        assert len(fresh_upstream.received) == 2  # refused calls never reach the upstream


async def test_errors_after_admission_carry_the_limit_headers(
    fresh_upstream: FakeUpstream, store_url: str
) -> None:
    """An admitted call that then fails (upstream 500 → 502, upstream 400 passed through)
    still tells the client where its limits stand."""
    key = new_secret("errhdr")
    with serving(
        config(fresh_upstream, store_url, [tenant("errhdr", key, limits={"rpm": 5})])
    ) as gw:
        async with httpx.AsyncClient(timeout=10) as http:
            failed = await chat(http, gw, key, model="status-500")
            assert_error(failed, 502, "upstream_error", "upstream_error")
            assert failed.headers["x-ratelimit-limit-requests"] == "5"
            assert failed.headers["x-ratelimit-remaining-requests"] == "4"
            refused = await chat(http, gw, key, model="status-400")
            assert refused.status_code == 400
            assert refused.json()["error"]["code"] == "upstream_code"  # the provider's body
            assert refused.headers["x-ratelimit-remaining-requests"] == "3"


async def test_sdk_retry_honours_retry_after_ms(
    fresh_upstream: FakeUpstream, store_url: str
) -> None:
    key = new_secret("rps")
    with serving(config(fresh_upstream, store_url, [tenant("rps", key, limits={"rps": 1})])) as gw:
        async with httpx.AsyncClient(timeout=10) as http, sdk_client(gw, key, max_retries=2) as sdk:
            first = await sdk.chat.completions.create(model="echo", messages=MESSAGES)
            assert first.choices[0].message.content == "hi"
            started = time.monotonic()
            second = await sdk.chat.completions.create(model="echo", messages=MESSAGES)
            elapsed = time.monotonic() - started
            assert second.choices[0].message.content == "hi"
            # the SDK waited for the window (retry-after-ms < 1000), not its own backoff
            assert 0.5 <= elapsed < 1.5, elapsed
            assert await metric(http, gw, "railgate_limits_rejected_total", "requests") == 1
    with fresh_upstream.lock:
        assert len(fresh_upstream.received) == 2


# ============================================================================ 3. budgets


def _period_left_s(period: str) -> float:
    now = time.time()
    t = time.gmtime(now)
    if period == "day":
        end = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0)) + 86_400
    else:
        days = calendar.monthrange(t.tm_year, t.tm_mon)[1]
        end = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0)) + days * 86_400
    return end - now


@pytest.mark.parametrize("period", ["day", "month"])
async def test_budget_refuses_once_spent_and_sdk_does_not_retry(
    upstream: FakeUpstream, limited: Limited, store_url: str, period: str
) -> None:
    limited.fake.usage = LIMITED_USAGE
    key = new_secret("bud")
    limits = {f"budget_usd_{period}": 0.01}
    tenants = [tenant("bud", key, limits=limits)]
    with serving(config(upstream, store_url, tenants, limited)) as gw:
        async with (
            httpx.AsyncClient(timeout=10) as http,
            sdk_client(gw, key, max_retries=2) as sdk,
        ):
            # 0 and 7,500 micro-USD spent are below 10,000: both calls run
            for spent_after in (LIMITED_COST, 2 * LIMITED_COST):
                ok = await chat(http, gw, key, model="lim-gpt")
                assert ok.status_code == 200, ok.text
                record = await settled(gw, ok)  # charged after the answer, before the record
                assert record.cost_micro_usd == LIMITED_COST
                if store_url.startswith("redis://"):
                    prefix = store_url.split("prefix=")[1]
                    t = time.gmtime()
                    stamp = f"{t.tm_year:04d}{t.tm_mon:02d}" + (
                        f"{t.tm_mday:02d}" if period == "day" else ""
                    )
                    client = redis.Redis.from_url(REDIS_URL)
                    try:
                        counter = client.get(f"{prefix}:{{bud}}:rl:t:usd:{period[0]}:{stamp}")
                    finally:
                        client.close()
                    assert int(counter or 0) == spent_after

            refused = await chat(http, gw, key, model="lim-gpt")
            message = assert_error(refused, 429, "insufficient_quota", "insufficient_quota")
            name = "daily" if period == "day" else "monthly"
            assert message == (
                f"Spending limit reached: the {name} budget of USD 0.01 is used up until"
                " the period renews (UTC)."
            )
            assert refused.headers["x-should-retry"] == "false"
            assert "retry-after-ms" not in refused.headers
            retry_after = refused.headers["retry-after"]
            assert retry_after.isdigit()
            assert abs(int(retry_after) - _period_left_s(period)) <= 2

            started = time.monotonic()
            with pytest.raises(openai.RateLimitError) as info:
                await sdk.chat.completions.create(model="lim-gpt", messages=MESSAGES)
            assert time.monotonic() - started < 0.5  # no retry, no backoff
            assert info.value.code == "insufficient_quota"
            assert info.value.type == "insufficient_quota"
            with pytest.raises(openai.RateLimitError) as info:
                await sdk.chat.completions.create(model="lim-gpt", messages=MESSAGES, stream=True)
            assert info.value.code == "insufficient_quota"
            # one refusal per client call: the SDK sent each call once
            assert await metric(http, gw, "railgate_limits_rejected_total", "usd") == 3
            # the budget is the tenant's, whatever the model: a free model is refused too
            free = await chat(http, gw, key, model="echo")
            assert_error(free, 429, "insufficient_quota", "insufficient_quota")
    assert limited.fake.served == 2


# ============================================================================ 4. scopes


async def test_key_limits_are_tighter_than_the_tenant(
    upstream: FakeUpstream, store_url: str
) -> None:
    tight, other = new_secret("tight"), new_secret("other")
    tenants = [tenant("keys", (tight, {"rpm": 1}), other, limits={"rpm": 10})]
    with serving(config(upstream, store_url, tenants)) as gw:
        async with httpx.AsyncClient(timeout=10) as http:
            ok = await chat(http, gw, tight)
            assert ok.status_code == 200
            # the tightest window is reported: the key's
            assert_limit_headers(ok.headers, (1, 0), None, fresh=True)
            refused = await chat(http, gw, tight)
            message = assert_error(refused, 429, "rate_limit_error", "rate_limit_exceeded")
            assert message.startswith(
                "Rate limit reached for requests per minute (key): limit 1, in use 1."
            )
            assert_retry_headers(refused, max_s=60)
            # another key of the same tenant: only the tenant's 10 apply (2 admitted so far)
            for remaining in (8, 7):
                other_ok = await chat(http, gw, other)
                assert other_ok.status_code == 200
                assert_limit_headers(other_ok.headers, (10, remaining), None)


async def test_model_limits_apply_to_their_model_only(
    upstream: FakeUpstream, store_url: str
) -> None:
    key = new_secret("mdl")
    tenants = [tenant("mdl", key, model_limits={"gpt-test": {"rpm": 1}})]
    with serving(config(upstream, store_url, tenants)) as gw:
        async with httpx.AsyncClient(timeout=10) as http:
            ok = await chat(http, gw, key, model="gpt-test")
            assert ok.status_code == 200
            assert_limit_headers(ok.headers, (1, 0), None, fresh=True)
            refused = await chat(http, gw, key, model="gpt-test")
            message = assert_error(refused, 429, "rate_limit_error", "rate_limit_exceeded")
            assert message.startswith(
                "Rate limit reached for requests per minute (gpt-test): limit 1, in use 1."
            )
            for _ in range(3):  # other models of the tenant are not limited at all
                other = await chat(http, gw, key, model="echo")
                assert other.status_code == 200
                assert not [h for h in other.headers if h.startswith("x-ratelimit")]


async def test_request_too_large_for_tpm_is_never_retried(
    upstream: FakeUpstream, store_url: str
) -> None:
    key = new_secret("big")
    with serving(config(upstream, store_url, [tenant("big", key, limits={"tpm": 100})])) as gw:
        async with (
            httpx.AsyncClient(timeout=10) as http,
            sdk_client(gw, key, max_retries=2) as sdk,
        ):
            refused = await chat(http, gw, key, max_tokens=200)
            message = assert_error(refused, 429, "rate_limit_error", "rate_limit_exceeded")
            assert message == (
                "Request too large for the tokens per minute limit of 100: it reserves"
                f" {RESERVED - MAX_TOKENS + 200} tokens (prompt estimate + max_tokens)."
                " Lower max_tokens."
            )
            assert refused.headers["x-should-retry"] == "false"
            assert "retry-after" not in refused.headers
            # without max_tokens the default output allowance (1024) is reserved: too large
            no_cap = await http.post(
                gw.v1 + "/chat/completions",
                json={"model": "echo", "messages": MESSAGES},
                headers={"authorization": f"Bearer {key}"},
            )
            assert_error(no_cap, 429, "rate_limit_error", "rate_limit_exceeded")
            started = time.monotonic()
            with pytest.raises(openai.RateLimitError) as info:
                await sdk.chat.completions.create(model="echo", messages=MESSAGES, max_tokens=500)
            assert time.monotonic() - started < 0.5
            assert info.value.response.headers["x-should-retry"] == "false"
            assert await metric(http, gw, "railgate_limits_rejected_total", "tokens") == 3
            # nothing was reserved by the refusals: a small request fits the whole window
            ok = await chat(http, gw, key)
            assert ok.status_code == 200
            assert_limit_headers(ok.headers, None, (100, 100 - RESERVED), fresh=True)


# ============================================================================ 5. leases


async def _refused_for_concurrency(http: httpx.AsyncClient, gw: Gateway, key: str) -> None:
    refused = await chat(http, gw, key)
    message = assert_error(refused, 429, "rate_limit_error", "rate_limit_exceeded")
    assert (
        message == "Rate limit reached for concurrent requests: limit 1, in use 1. Retry after 1 s."
    )
    assert_retry_headers(refused, max_s=1)


async def _admitted(http: httpx.AsyncClient, gw: Gateway, key: str) -> tuple[httpx.Response, bool]:
    resp = await chat(http, gw, key)
    assert resp.status_code in (200, 429), resp.text
    return resp, resp.status_code == 200


@asynccontextmanager
async def _one_call_at_a_time(
    upstream: FakeUpstream, store_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway, str]]:
    """A gateway whose tenant may have one call in flight (`concurrency: 1`):
    (a client, the gateway, the tenant's key)."""
    key = new_secret("conc")
    tenants = [tenant("conc", key, limits={"concurrency": 1})]
    with serving(config(upstream, store_url, tenants)) as gw:
        async with httpx.AsyncClient(timeout=10) as http:
            yield http, gw, key


async def _lease_back_within_a_second(http: httpx.AsyncClient, gw: Gateway, key: str) -> None:
    """A client left: its lease is back well before any timeout."""
    _, took = await eventually(lambda: _admitted(http, gw, key), within=1.0)
    assert took < 1.0


async def _recorded_as_disconnected(gw: Gateway, rid: str) -> None:
    record = await settled(gw, rid)
    assert record.status == 499 and record.error == "client_disconnected"


async def test_lease_returns_after_streamed_disconnect(
    fresh_upstream: FakeUpstream, store_url: str
) -> None:
    async with _one_call_at_a_time(fresh_upstream, store_url) as (http, gw, key):
        rid = f"lease-{uuid.uuid4().hex}"
        async with streamed_chat(gw.v1, key, body("hang", stream=True), request_id=rid) as resp:
            assert resp.status_code == 200
            chunks = resp.aiter_bytes()  # kept: a dropped iterator closes the connection
            assert (await anext(chunks)).startswith(b"data: ")
            await _refused_for_concurrency(http, gw, key)
            await asyncio.sleep(0.2)  # still streaming, still holding the lease
            await _refused_for_concurrency(http, gw, key)
            await resp.aclose()  # the client leaves mid-stream
        await _lease_back_within_a_second(http, gw, key)
        assert await asyncio.to_thread(fresh_upstream.disconnected.wait, 1)
        await _recorded_as_disconnected(gw, rid)


async def test_lease_returns_after_non_streamed_disconnect(
    fresh_upstream: FakeUpstream, store_url: str
) -> None:
    async with _one_call_at_a_time(fresh_upstream, store_url) as (http, gw, key):
        rid = f"lease-json-{uuid.uuid4().hex}"
        async with httpx.AsyncClient(timeout=10) as hanging:
            call = asyncio.create_task(
                hanging.post(
                    gw.v1 + "/chat/completions",
                    json=body("hang-json"),
                    headers={"authorization": f"Bearer {key}", "x-request-id": rid},
                )
            )

            async def upstream_has_it() -> tuple[Any, bool]:
                with fresh_upstream.lock:
                    seen = any(r.json["model"] == "hang-json" for r in fresh_upstream.received)
                return None, seen

            await eventually(upstream_has_it, within=2.0, every=0.01)
            await _refused_for_concurrency(http, gw, key)
            call.cancel()
            with suppress(asyncio.CancelledError):
                await call
        await _lease_back_within_a_second(http, gw, key)
        await _recorded_as_disconnected(gw, rid)


async def test_lease_returns_after_upstream_error_and_sequential_calls_never_collide(
    upstream: FakeUpstream, store_url: str
) -> None:
    async with _one_call_at_a_time(upstream, store_url) as (http, gw, key):
        for stream in (False, True):
            failed = await chat(http, gw, key, model="status-500", stream=stream)
            assert_error(failed, 502, "upstream_error", "upstream_error")
            # the very next call is admitted: the failed call's lease is gone
            ok = await chat(http, gw, key, stream=stream)
            assert ok.status_code == 200, ok.text
        # one client doing one call at a time never meets its own lease
        for i in range(10):
            resp = await chat(http, gw, key, stream=bool(i % 2))
            assert resp.status_code == 200, (i, resp.text)


# ============================================================================ 6. fail modes


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    with own_redis_server() as server:
        yield server


async def test_fail_modes_when_redis_dies_and_recovery(
    upstream: FakeUpstream, own_redis: OwnRedis
) -> None:
    open_key, closed_key = new_secret("open"), new_secret("closed")
    tenants = [
        tenant("open", open_key, limits={"rpm": 3, "fail_mode": "open"}),
        tenant("closed", closed_key, limits={"rpm": 3, "fail_mode": "closed"}),
    ]
    raw = config(
        upstream,
        f"redis://127.0.0.1:{own_redis.port}/0",
        tenants,
        limiter={"timeout_ms": 200, "retry_after_failure_ms": 300},
    )
    statuses: list[int] = []

    async def timed(
        http: httpx.AsyncClient, gw: Gateway, key: str, **fields: Any
    ) -> httpx.Response:
        started = time.monotonic()
        resp = await chat(http, gw, key, **fields)
        assert time.monotonic() - started < 1.0, "a limiter call outlived its deadline"
        statuses.append(resp.status_code)
        return resp

    with serving(raw) as gw:
        async with httpx.AsyncClient(timeout=10) as http:
            for key in (open_key, closed_key):  # limits work while Redis is up
                ok = await timed(http, gw, key)
                assert_limit_headers(ok.headers, (3, 2), None, fresh=True)
            assert await metric(http, gw, "railgate_limits_fail_open_total") == 0

            own_redis.kill()
            for i in range(6):  # spread over ~0.75 s: skipped and retried store calls alike
                resp = await timed(http, gw, open_key, stream=bool(i % 2))
                assert resp.status_code == 200, resp.text
                assert not [h for h in resp.headers if h.startswith("x-ratelimit")]
                refused = await timed(http, gw, closed_key, stream=bool(i % 2))
                assert_error(refused, 503, "server_error", "limits_unavailable")
                assert refused.headers["retry-after"] == "1"
                await asyncio.sleep(0.12)
            # six open calls over a limit of 3: fail open really means unlimited
            assert await metric(http, gw, "railgate_limits_fail_open_total") == 6
            assert await metric(http, gw, "railgate_limits_fail_closed_total") == 6
            assert await metric(http, gw, "railgate_limits_store_errors_total") >= 1

            own_redis.start()  # same port, empty: the old windows are gone

            async def counted(key: str) -> tuple[httpx.Response, bool]:
                resp = await timed(http, gw, key)
                assert resp.status_code in (200, 503), resp.text
                return (
                    resp,
                    resp.status_code == 200 and "x-ratelimit-limit-requests" in resp.headers,
                )

            for key in (open_key, closed_key):
                first, took = await eventually(lambda k=key: counted(k), within=2.0)
                assert took < 2.0
                assert_limit_headers(first.headers, (3, 2), None, fresh=True)
                for remaining in (1, 0):
                    ok = await timed(http, gw, key)
                    assert ok.status_code == 200
                    assert ok.headers["x-ratelimit-remaining-requests"] == str(remaining)
                refused = await timed(http, gw, key)
                assert_error(refused, 429, "rate_limit_error", "rate_limit_exceeded")
    assert 500 not in statuses
    assert set(statuses) <= {200, 429, 503}


async def test_store_stall_leaves_no_orphan_leases(
    upstream: FakeUpstream, own_redis: OwnRedis
) -> None:
    """Redis stops answering (SIGSTOP) for longer than `timeout_ms`: each call gets its fail
    mode within the deadline. An admission the gateway gave up on must not come back to
    bite once Redis resumes: the tenant (concurrency 1, nothing in flight) is admitted."""
    open_key, closed_key = new_secret("open"), new_secret("closed")
    limits = {"concurrency": 1, "rpm": 100}  # rpm only to see, in the headers, a counted call
    tenants = [
        tenant("open", open_key, limits={**limits, "fail_mode": "open"}),
        tenant("closed", closed_key, limits={**limits, "fail_mode": "closed"}),
    ]
    raw = config(
        upstream,
        f"redis://127.0.0.1:{own_redis.port}/0",
        tenants,
        limiter={"timeout_ms": 200, "retry_after_failure_ms": 300},
    )
    with serving(raw) as gw:
        async with httpx.AsyncClient(timeout=10) as http:
            for key in (open_key, closed_key):
                ok = await chat(http, gw, key)
                assert ok.status_code == 200
                assert ok.headers["x-ratelimit-remaining-requests"] == "99"

            async def counted(key: str) -> tuple[httpx.Response, bool]:
                resp = await chat(http, gw, key)
                assert resp.status_code in (200, 429, 503), resp.text
                return (
                    resp,
                    resp.status_code == 200 and "x-ratelimit-limit-requests" in resp.headers,
                )

            stuck: list[str] = []
            for name, key, status in (("open", open_key, 200), ("closed", closed_key, 503)):
                # one stall per tenant, each starting from a healthy, idle store connection
                await eventually(lambda k=key: counted(k), within=2.0)
                await asyncio.sleep(0.1)
                own_redis.pause()
                try:
                    started = time.monotonic()
                    resp = await chat(http, gw, key)
                    took = time.monotonic() - started
                    assert resp.status_code == status, resp.text
                    assert 0.15 < took < 1.0, took  # waited for the deadline, not longer
                    assert not [h for h in resp.headers if h.startswith("x-ratelimit")]
                finally:
                    own_redis.resume()
                try:
                    await eventually(lambda k=key: counted(k), within=2.0)
                except AssertionError as exc:
                    stuck.append(f"{name} tenant: {exc}")
            assert not stuck, "\n".join(stuck)


# ============================================================================ 7. config


def _base(**tenant_fields: Any) -> dict[str, Any]:
    raw = gateway_config("http://127.0.0.1:9")
    raw["tenants"] = [{"id": "t", "keys": [{"key_sha256": "a" * 64}], **tenant_fields}]
    return raw


BAD_CONFIGS: list[tuple[str, dict[str, Any], str, str]] = [
    # (id, raw config, field path, a word of the reason)
    ("rpm-zero", _base(limits={"rpm": 0}), "$.tenants[0].limits.rpm", ">= 1"),
    ("tpm-negative", _base(limits={"tpm": -5}), "$.tenants[0].limits.tpm", ">= 1"),
    ("rps-text", _base(limits={"rps": "fast"}), "$.tenants[0].limits.rps", "int"),
    (
        "budget-negative",
        _base(limits={"budget_usd_day": -1}),
        "$.tenants[0].limits.budget_usd_day",
        ">= 0",
    ),
    (
        "fail-mode-sideways",
        _base(limits={"fail_mode": "sideways"}),
        "$.tenants[0].limits.fail_mode",
        "sideways",
    ),
    ("unknown-limit", _base(limits={"rpd": 5}), "$.tenants[0].limits", "rpd"),
    (
        "model-limits-unknown-model",
        _base(model_limits={"gpt-nope": {"rpm": 5}}),
        "$.tenants[0].model_limits.gpt-nope",
        "gpt-nope",
    ),
    (
        "model-limits-zero",
        _base(model_limits={"gpt-test": {"tpm": 0}}),
        "$.tenants[0].model_limits.gpt-test.tpm",
        ">= 1",
    ),
    (
        "model-limits-concurrency",
        _base(model_limits={"gpt-test": {"concurrency": 1}}),
        "$.tenants[0].model_limits.gpt-test",
        "concurrency",
    ),
    (
        "key-limits-zero",
        _base(keys=[{"key_sha256": "b" * 64, "limits": {"concurrency": 0}}]),
        "$.tenants[0].keys[0].limits.concurrency",
        ">= 1",
    ),
    (
        "limiter-timeout-zero",
        {**_base(), "limiter": {"timeout_ms": 0}},
        "$.limiter.timeout_ms",
        ">= 1",
    ),
    (
        "limiter-unknown",
        {**_base(), "limiter": {"timeout": 5}},
        "$.limiter",
        "timeout",
    ),
]


@pytest.mark.parametrize(
    ("raw", "path", "reason"),
    [row[1:] for row in BAD_CONFIGS],
    ids=[row[0] for row in BAD_CONFIGS],
)
def test_bad_limits_config_names_the_field(raw: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(raw, {UPSTREAM_KEY_ENV: UPSTREAM_KEY})
    assert info.value.path == path, str(info.value)
    assert reason in info.value.reason, str(info.value)


def test_good_limits_config_parses() -> None:
    raw = _base(
        limits={"rpm": 60, "rps": 2, "tpm": 10_000, "concurrency": 4, "budget_usd_day": 1.5,
                "budget_usd_month": 20, "fail_mode": "closed"},
        model_limits={"gpt-test": {"rpm": 5, "tpm": 1000}},
        keys=[{"key_sha256": "c" * 64, "limits": {"rpm": 10}}],
    )  # fmt: skip
    raw["limiter"] = {"timeout_ms": 100, "retry_after_failure_ms": 0, "lease_ttl_s": 5,
                      "default_max_tokens": 256}  # fmt: skip
    settings = parse_settings(raw, {UPSTREAM_KEY_ENV: UPSTREAM_KEY})
    limits = settings.tenants[0].limits
    assert limits is not None and limits.fail_mode == "closed" and limits.budget_usd_month == 20
    assert settings.tenants[0].model_limits is not None
    assert settings.tenants[0].model_limits["gpt-test"].tpm == 1000
    assert settings.tenants[0].keys[0].limits is not None
    assert settings.tenants[0].keys[0].limits.rpm == 10
    assert settings.limiter.default_max_tokens == 256
