"""Upstream pacing: a provider's own `limits` are kept by the gateway, across replicas.

The provider windows are fixed at 60 s (`plan.provider_rules`), so waiting for a window
cannot be watched in real time by running a minute of traffic. The tests that need a
window to free up soon either seed the provider's window in Redis with entries that
leave it within a second (the store layout documented in `lua/common.lua`: a sorted
set of `<amount>:<ticket>:<tenant>` scored by Redis ms, plus its `:n` sum), as if
another replica had filled it 59 s ago, or drive `StoreLimiter.pace` on a
`MemoryLimits` whose clock the test moves (with `asyncio.sleep` recorded, not slept).
A provider's `retry-after` block is short on its own and is watched in real time.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import redis.asyncio

from gateway.call import Call
from gateway.config import parse_settings
from gateway.errors import RateLimited
from gateway.keys import hash_key
from gateway.limits.limiter import Reservation, StoreLimiter
from gateway.limits.memory import MemoryLimits
from gateway.limits.plan import provider_rules
from gateway.limits.redis import RedisLimits
from gateway.limits.spec import LimiterSettings, ProviderLimits
from gateway.metrics import Counters
from gateway.providers.registry import ModelRouter, build_providers
from gateway.schemas import parse_request
from gateway.store.base import ApiKey, Tenant
from gateway.telemetry.tracecontext import trace_context
from gateway.tenancy import Caller
from tests.conftest import REDIS_URL, UPSTREAM_KEY, UPSTREAM_KEY_ENV, start_gateway
from tests.limited_upstream import LimitedUpstream
from tests.local_redis import redis_prefix
from tests.railgate_process import serve_env, serving, write_config
from tests.servers import ServerThread, handle_lifespan, read_body, send_json

MODEL = "paced-model"
PROVIDER_429 = "provider rpm exceeded"
"""The fake provider's own 429 message: a client must never read it when paced."""
TENANTS = ("pa", "pb", "pc", "pd")
KEYS = {tenant: f"rg-test-{tenant}-" + "p" * 40 for tenant in TENANTS}
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


# -- helpers -------------------------------------------------------------------------


@dataclass
class RecordingUpstream(LimitedUpstream):
    """`LimitedUpstream` that also notes when each request reached it (monotonic s)."""

    arrivals: list[float] = field(default_factory=list)

    def _admit(self) -> tuple[bool, int]:
        with self.lock:
            self.arrivals.append(time.monotonic())
        return super()._admit()


@dataclass
class OverloadedUpstream:
    """A provider that answers 429 `retry-after: 1` (and no remaining counts: it is
    overloaded, not out of quota) to the next `refuse` requests of a model, else 200."""

    refuse: dict[str, int] = field(default_factory=dict)
    arrivals: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    """model -> [(monotonic time of the answer, status)]"""
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if await handle_lifespan(scope, receive, send):
            return
        body = await read_body(receive)
        model = orjson.loads(body)["model"]
        with self.lock:
            left = self.refuse.get(model, 0)
            self.refuse[model] = max(0, left - 1)
            status = 429 if left else 200
            self.arrivals.setdefault(model, []).append((time.monotonic(), status))
        if status == 429:
            error = {"error": {"message": "provider overloaded", "type": "requests",
                               "param": None, "code": "rate_limit_exceeded"}}  # fmt: skip
            await send_json(send, status, orjson.dumps(error), [(b"retry-after", b"1")])
            return
        answer = {
            "id": "chatcmpl-overloaded",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }  # fmt: skip
        await send_json(send, status, orjson.dumps(answer))


def _provider(name: str, url: str, limits: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "name": name,
        "type": "openai",
        "base_url": url + "/v1",
        "api_key_env": UPSTREAM_KEY_ENV,
        "timeout_s": 30.0,
        **({"limits": limits} if limits is not None else {}),
    }


def _config(store: str, providers: list[dict[str, Any]], models: dict[str, str]) -> dict[str, Any]:
    return {
        "store": store,
        "providers": providers,
        "models": [{"name": m, "provider": p} for m, p in models.items()],
        "tenants": [{"id": t, "keys": [{"key_sha256": hash_key(k)}]} for t, k in KEYS.items()],
    }


def _auth(tenant: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[tenant]}"}


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=30, limits=httpx.Limits(max_connections=100, max_keepalive_connections=100)
    )


def _metric(text: str, series: str) -> int:
    """One series of `/metrics`; a labelled series not rendered yet is 0 if its counter is."""
    values = dict(line.rpartition(" ")[::2] for line in text.splitlines() if line[:1] != "#")
    if series in values:
        return int(values[series])
    base = series.partition("{")[0]
    assert values.get(base) == "0" and not any(k.startswith(base + "{") for k in values), (
        f"{series} not in /metrics"
    )
    return 0


def _assert_gateway_429(resp: httpx.Response, reason: str) -> None:
    """The gateway's own pacing refusal: OpenAI-shaped, with Retry-After; not the provider's."""
    assert resp.status_code == 429, resp.text
    error = resp.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "rate_limit_error"
    assert reason in error["message"], error["message"]
    assert PROVIDER_429 not in resp.text
    assert int(resp.headers["retry-after"]) >= 1
    assert int(resp.headers["retry-after-ms"]) >= 1
    assert resp.headers["x-should-retry"] == "true"


async def _until(check: Any, within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.fixture
def prefix() -> Iterator[str]:
    """A unique Redis prefix, its keys deleted afterwards."""
    with redis_prefix() as prefix:
        yield prefix


@asynccontextmanager
async def _gateway(raw: dict[str, Any]) -> AsyncIterator[str]:
    """An in-process gateway (uvicorn thread) on `raw`; yields its base URL."""
    server, gw = start_gateway(raw, {UPSTREAM_KEY_ENV: UPSTREAM_KEY})
    await asyncio.to_thread(server.__enter__)
    try:
        yield gw.url
    finally:
        await asyncio.to_thread(server.__exit__, None, None, None)


def _seed_full_window(prefix: str, provider: str, frees_in_ms: list[int]) -> float:
    """Fill `provider`'s rpm window in Redis with one entry per item, each leaving the
    window that many ms from now (as if sent 60 s minus that ago). Returns the local
    monotonic time taken as "now"."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        seconds, micros = client.time()
        local = time.monotonic()
        now_ms = seconds * 1000 + micros // 1000
        key = f"{prefix}:{{provider:{provider}}}:pace:rpm"
        client.zadd(
            key, {f"1:seed{i}:seeder": now_ms - 60_000 + ms for i, ms in enumerate(frees_in_ms)}
        )
        client.set(key + ":n", len(frees_in_ms), px=60_000)
        client.pexpire(key, 60_000)
        return local
    finally:
        client.close()


SEEDED_FREES_MS = [300, 500, 700, 900]
"""When the slots of a seeded full window free, in ms from the seeding."""


@asynccontextmanager
async def _before_a_full_window(
    upstream: LimitedUpstream, prefix: str
) -> AsyncIterator[tuple[str, httpx.AsyncClient, float]]:
    """A gateway on Redis `prefix` in front of `upstream` as provider `up` (rpm 4, a
    request may wait 5 s for its slot) and a client; the provider's window is seeded
    full, its slots freeing `SEEDED_FREES_MS` from now. Yields (gateway URL, client,
    the monotonic time taken as now)."""
    with ServerThread(upstream) as server:
        raw = _config(
            f"{REDIS_URL}?prefix={prefix}",
            [_provider("up", server.url, {"rpm": 4, "max_queue_wait_ms": 5000})],
            {MODEL: "up"},
        )
        async with _gateway(raw) as url, _client() as http:
            yield url, http, _seed_full_window(prefix, "up", SEEDED_FREES_MS)


# -- 1. the acceptance test: two replicas never let the provider answer 429 -----------


@pytest.fixture
def replicas(prefix: str, tmp_path: Path) -> Iterator[tuple[list[str], LimitedUpstream]]:
    """Two `railgate serve` processes, one Redis prefix, one provider with `rpm: 20`
    in front of a fake whose own account limit is also 20 per minute."""
    upstream = LimitedUpstream(rpm=20)
    with ServerThread(upstream) as server:
        raw = _config(
            f"{REDIS_URL}?prefix={prefix}",
            [_provider("up", server.url, {"rpm": 20})],
            {MODEL: "up"},
        )
        config = write_config(tmp_path / "railgate.yaml", raw)
        runs = [(tmp_path / f"{name}.log", config) for name in ("a", "b")]
        with serving(*runs, env=serve_env({UPSTREAM_KEY_ENV: UPSTREAM_KEY})) as started:
            yield [railgate.url for railgate in started], upstream


async def test_twice_the_providers_rpm_over_two_replicas_never_reaches_its_429(replicas):
    urls, upstream = replicas
    async with _client() as http:

        async def one(i: int) -> httpx.Response:
            tenant = TENANTS[i % len(TENANTS)]
            url = urls[(i // len(TENANTS)) % 2] + "/v1/chat/completions"
            stream = (i // (2 * len(TENANTS))) % 2 == 1  # half of each replica's are streamed
            body = {**BODY, "stream": stream}
            return await http.post(url, headers=_auth(tenant), json=body)

        for url in urls:  # warm both replicas (connections, keys) without using the provider
            for tenant in TENANTS:
                assert (await http.get(url + "/v1/models", headers=_auth(tenant))).is_success
        answers = await asyncio.gather(*(one(i) for i in range(40)))
        metrics = [(await http.get(url + "/metrics")).text for url in urls]

    assert Counter(r.status_code for r in answers) == {200: 20, 429: 20}
    for resp in answers:
        assert PROVIDER_429 not in resp.text
        if resp.status_code == 200 and orjson.loads(resp.request.content)["stream"]:
            assert resp.headers["content-type"].startswith("text/event-stream")
            assert '"content":"ok"' in resp.text and resp.text.endswith("data: [DONE]\n\n")
        elif resp.status_code == 200:
            assert resp.json()["choices"][0]["message"]["content"] == "ok"
        else:
            _assert_gateway_429(resp, "the wait would exceed 10000 ms")
            # the window frees 60 s after the first sends; the wait allowed is 10 s
            assert 1 <= int(resp.headers["retry-after"]) <= 50
    # each replica took 20 requests: alone, each would have sent all 20 upstream; between
    # them they sent exactly the provider's rpm (how the slots split between them is a
    # race), and each refused what it counted as refused
    for url, text in zip(urls, metrics, strict=True):
        mine = [r for r in answers if str(r.url).startswith(url + "/")]
        assert len(mine) == 20
        refused = sum(r.status_code == 429 for r in mine)
        assert _metric(text, 'railgate_pacing_rejected_total{kind="wait"}') == refused
        assert _metric(text, "railgate_pacing_waits_total") == 0
    await _until(lambda: upstream.served == 20)
    assert upstream.refused == 0
    await asyncio.sleep(0.1)
    assert (upstream.served, upstream.refused) == (20, 0)


# -- 2. a request over the window waits for it, then succeeds -------------------------


async def test_requests_over_a_full_window_wait_for_their_slot_and_succeed(prefix):
    """The provider's minute is full (seeded: its four slots free 300..900 ms from now).
    Four tenants each send one request: none is refused, each reaches the provider only
    once a slot left the window, in order, and each counts as a pacing wait."""
    upstream = RecordingUpstream(rpm=4)
    async with _before_a_full_window(upstream, prefix) as (url, http, now):
        answers = await asyncio.gather(
            *(http.post(url + "/v1/chat/completions", headers=_auth(t), json=BODY) for t in TENANTS)
        )
        elapsed = time.monotonic() - now
        metrics = (await http.get(url + "/metrics")).text
    assert [r.status_code for r in answers] == [200, 200, 200, 200], [r.text for r in answers]
    assert upstream.refused == 0
    assert len(upstream.arrivals) == 4
    for arrived, free_ms in zip(sorted(upstream.arrivals), SEEDED_FREES_MS, strict=True):
        assert arrived >= now + free_ms / 1000 - 0.005, (arrived - now, free_ms)
        assert arrived <= now + free_ms / 1000 + 0.25, (arrived - now, free_ms)
    assert elapsed >= 0.895
    assert _metric(metrics, "railgate_pacing_waits_total") == 4
    assert _metric(metrics, "railgate_pacing_rejected_total") == 0


def _call(settings_raw: dict[str, Any], tenant: str) -> Call:
    settings = parse_settings(settings_raw, {UPSTREAM_KEY_ENV: UPSTREAM_KEY})
    route = ModelRouter(settings, build_providers(settings)).resolve(MODEL)
    caller = Caller(
        Tenant(id=tenant), ApiKey(id=f"key_{tenant}", tenant_id=tenant, key_sha256="0" * 64)
    )
    request = parse_request("chat/completions", orjson.dumps(BODY))
    return Call(
        request_id=uuid.uuid4().hex,
        caller=caller,
        route=route,
        request=request,
        trace=trace_context({}),
    )


async def test_store_limiter_sleeps_until_the_booked_slot(monkeypatch):
    """`StoreLimiter.pace` on a memory backend with a test clock: a request over a full
    window sleeps exactly until the oldest entry leaves it, then goes; one whose wait
    would exceed `max_queue_wait_ms` is refused with the time left as Retry-After."""
    clock = [1_000_000]
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += round(seconds * 1000)
        await real_sleep(0)

    monkeypatch.setattr("gateway.limits.limiter.asyncio.sleep", sleep)
    counters = Counters()
    limits = ProviderLimits(rpm=2, max_queue_wait_ms=30_000)
    limiter = StoreLimiter(
        MemoryLimits(clock=lambda: clock[0]),
        LimiterSettings(),
        {"up": limits},
        counters,
        lambda work: work.close(),  # nothing is observed here
    )
    raw = _config("memory://", [_provider("up", "http://127.0.0.1:9", None)], {MODEL: "up"})

    async def pace(tenant: str) -> None:
        call = _call(raw, tenant)
        ticket = await limiter.admit(call)
        assert isinstance(ticket, Reservation)
        await limiter.pace(ticket, call)

    await pace("pa")  # t = 0
    clock[0] += 40_000
    await pace("pb")  # t = 40 s: the window is full until t = 60 s
    assert slept == []
    clock[0] += 5_000
    await pace("pa")  # t = 45 s: waits 15 s for the first slot
    assert slept == [15.0]
    assert clock[0] == 1_060_000
    assert counters.get("railgate_pacing_waits_total") == 1
    with pytest.raises(RateLimited) as refused:
        await pace("pc")  # t = 60 s: next slot at t = 100 s, 40 s > 30 s allowed
    assert refused.value.headers["retry-after"] == "10"
    assert refused.value.headers["retry-after-ms"] == "10000"
    assert counters.get("railgate_pacing_rejected_total", "wait") == 1
    assert slept == [15.0]


# -- 3. the provider's own signals tighten the gateway --------------------------------


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_remaining_requests_reported_by_the_provider_stop_the_gateway(store, prefix):
    """The gateway believes the provider allows 20 rpm, the provider allows 5 and says
    so (`x-ratelimit-remaining-requests`). After its first answer the gateway sends
    exactly what is left and refuses the rest itself; a provider without `limits`
    (the control, same fake account limit) lets the provider answer 429 instead."""
    paced, control = LimitedUpstream(rpm=5), LimitedUpstream(rpm=5)
    with ServerThread(paced) as paced_srv, ServerThread(control) as control_srv:
        raw = _config(
            f"{REDIS_URL}?prefix={prefix}" if store == "redis" else "memory://",
            [
                _provider("up", paced_srv.url, {"rpm": 20, "max_queue_wait_ms": 2000}),
                _provider("raw", control_srv.url, None),
            ],
            {MODEL: "up", "raw-model": "raw"},
        )
        async with _gateway(raw) as url, _client() as http:
            chat = url + "/v1/chat/completions"
            results: dict[str, list[httpx.Response]] = {}
            for model in (MODEL, "raw-model"):
                body = {**BODY, "model": model}
                first = await http.post(chat, headers=_auth("pa"), json=body)
                assert first.status_code == 200, first.text
                await asyncio.sleep(0.2)  # the tightening runs off the request path
                results[model] = await asyncio.gather(
                    *(http.post(chat, headers=_auth(t), json=body) for t in TENANTS * 2 + ("pa",))
                )
            metrics = (await http.get(url + "/metrics")).text

    burst = results[MODEL]
    assert Counter(r.status_code for r in burst) == {200: 4, 429: 5}
    for resp in burst:
        if resp.status_code == 429:
            _assert_gateway_429(resp, "the wait would exceed 2000 ms")
    await _until(lambda: paced.served == 5)
    assert paced.refused == 0
    assert _metric(metrics, 'railgate_pacing_rejected_total{kind="wait"}') == 5

    unpaced = results["raw-model"]
    assert Counter(r.status_code for r in unpaced) == {200: 4, 429: 5}
    assert sum(PROVIDER_429 in r.text for r in unpaced) == 5
    await _until(lambda: control.served == 5)
    assert control.refused == 5


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_provider_retry_after_blocks_sending_for_that_long(store, prefix):
    """The provider answers one 429 with `retry-after: 1`. On the patient provider
    (`max_queue_wait_ms: 3000`) the next request is held back and reaches the provider
    1 s after that 429, then succeeds; on the hasty one (300 ms) the next request is
    refused by the gateway without reaching the provider, and one sent after the second
    has passed goes through."""
    upstream = OverloadedUpstream(refuse={"patient": 1, "hasty": 1})
    with ServerThread(upstream) as server:
        raw = _config(
            f"{REDIS_URL}?prefix={prefix}" if store == "redis" else "memory://",
            [
                _provider("p1", server.url, {"rpm": 100, "max_queue_wait_ms": 3000}),
                _provider("p2", server.url, {"rpm": 100, "max_queue_wait_ms": 300}),
            ],
            {"patient": "p1", "hasty": "p2"},
        )
        async with _gateway(raw) as url, _client() as http:
            chat = url + "/v1/chat/completions"

            async def patient() -> None:
                body = {**BODY, "model": "patient"}
                first = await http.post(chat, headers=_auth("pa"), json=body)
                assert first.status_code == 429 and "provider overloaded" in first.text
                await asyncio.sleep(0.1)  # the block is set off the request path
                second = await http.post(chat, headers=_auth("pb"), json=body)
                assert second.status_code == 200, second.text
                (t429, s1), (t_next, s2) = upstream.arrivals["patient"]
                assert (s1, s2) == (429, 200)
                assert t429 + 0.995 <= t_next <= t429 + 1.3, t_next - t429

            async def hasty() -> None:
                body = {**BODY, "model": "hasty"}
                first = await http.post(chat, headers=_auth("pa"), json=body)
                assert first.status_code == 429 and "provider overloaded" in first.text
                await asyncio.sleep(0.1)
                second = await http.post(chat, headers=_auth("pb"), json=body)
                _assert_gateway_429(second, "the wait would exceed 300 ms")
                assert second.headers["retry-after"] == "1"
                assert len(upstream.arrivals["hasty"]) == 1
                ((t429, _),) = upstream.arrivals["hasty"]
                await asyncio.sleep(max(0.0, t429 + 1.05 - time.monotonic()))
                third = await http.post(chat, headers=_auth("pb"), json=body)
                assert third.status_code == 200, third.text
                assert [s for _, s in upstream.arrivals["hasty"]] == [429, 200]

            await asyncio.gather(patient(), hasty())
            metrics = (await http.get(url + "/metrics")).text
    assert _metric(metrics, "railgate_pacing_waits_total") == 1
    assert _metric(metrics, 'railgate_pacing_rejected_total{kind="wait"}') == 1


# -- 4. fairness: a flooding tenant leaves a queued slot for the next one -------------


@pytest.fixture(params=["memory", "redis"])
async def backend(
    request: pytest.FixtureRequest, prefix: str
) -> AsyncIterator[MemoryLimits | RedisLimits]:
    if request.param == "memory":
        yield MemoryLimits(clock=lambda: 5_000_000)  # time stands still
        return
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    yield RedisLimits(client, prefix)
    await client.aclose()


async def test_a_flooding_tenant_leaves_queue_slots_for_a_later_one(backend):
    """rpm 10, max wait 120 s: the queue holds what the window frees in 120 s (20), a
    tenant at most capacity / (other waiting tenants + 2). A fills the window, then
    floods: 10 queued (20 / 2), then refused for its share. B arrives afterwards and
    still gets queued slots (20 / 3 = 6 of them) while A stays refused."""
    rules, block = provider_rules("fair", ProviderLimits(rpm=10))
    max_wait = 120_000

    async def pace(tenant: str) -> tuple[str | None, int]:
        verdict = await backend.pace(f"{uuid.uuid4().hex}:{tenant}", rules, block, max_wait)
        return verdict.refused, verdict.wait_ms

    async def queue(tenant: str, requests: int, slot_ms: int) -> list[str | None]:
        """Each request's refusal; a queued one waits for the slot at `slot_ms`."""
        refusals = []
        for _ in range(requests):
            refused, wait = await pace(tenant)
            refusals.append(refused)
            if refused is None:
                assert slot_ms - 1_000 < wait <= slot_ms
        return refusals

    for _ in range(10):
        assert await pace("a") == (None, 0)
    assert await queue("a", 11, 60_000) == [None] * 10 + ["share"]
    assert await queue("b", 7, 120_000) == [None] * 6 + ["share"]
    assert (await pace("a"))[0] == "share"
    # a third tenant still gets in: its first queued request is always allowed
    refused, wait = await pace("c")
    assert refused is None and 119_000 < wait <= 120_000


async def test_fair_share_end_to_end(prefix):
    """Through the gateway: the provider's window is full (seeded) and frees a slot
    every 200 ms from 300 ms on. Tenant A has one request waiting and sends another:
    refused for its share. Tenant B, arriving after that, is queued and served."""
    upstream = RecordingUpstream()
    async with _before_a_full_window(upstream, prefix) as (url, http, _):
        chat = url + "/v1/chat/completions"
        a_first = asyncio.create_task(http.post(chat, headers=_auth("pa"), json=BODY))
        await asyncio.sleep(0.1)
        a_second = await http.post(chat, headers=_auth("pa"), json=BODY)
        b_first = await http.post(chat, headers=_auth("pb"), json=BODY)
        a_first_resp = await a_first
    _assert_gateway_429(a_second, "its fair share of the queue is taken")
    assert a_first_resp.status_code == 200, a_first_resp.text
    assert b_first.status_code == 200, b_first.text
    assert len(upstream.arrivals) == 2
