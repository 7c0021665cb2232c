"""Shared fixtures: a fake upstream and a gateway, both real servers on loopback."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from gateway.app import asgi_app, create_app
from gateway.config import Settings, parse_settings
from gateway.keys import hash_key
from gateway.store import RedisStore
from gateway.usage import UsageRecord
from tests.fakes import FakeUpstream
from tests.servers import ServerThread, free_port

REDIS_URL = "redis://127.0.0.1:6379/0"
KEY_ACME = "rg-test-acme-" + "a" * 40
KEY_LIMITED = "rg-test-limited-" + "b" * 40
UPSTREAM_KEY_ENV = "TEST_UPSTREAM_KEY"
UPSTREAM_KEY = "sk-upstream-secret"
FAKE_MODELS = [
    "tools",
    "slow",
    "drop",
    "hang",
    "hang-json",
    "echo",
    "pretty",
    "garbage",
    "no-usage",
    "status-400",
    "status-404",
    "status-422",
    "status-429",
    "status-500",
    "status-503",
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ambient configuration leaks into a test."""
    for name in list(os.environ):
        if name.startswith("RAILGATE_") or name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.setenv(UPSTREAM_KEY_ENV, UPSTREAM_KEY)


@dataclass
class CollectingSink:
    records: list[UsageRecord] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    async def record(self, record: UsageRecord) -> None:
        with self.arrived:
            self.records.append(record)
            self.arrived.notify_all()

    def wait_for(self, request_id: str, timeout: float = 5.0) -> UsageRecord:
        with self.arrived:
            ok = self.arrived.wait_for(
                lambda: any(r.request_id == request_id for r in self.records), timeout
            )
            assert ok, f"no usage record for {request_id}"
            return next(r for r in self.records if r.request_id == request_id)


def gateway_config(upstream_url: str, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "store": "memory://",
        "providers": [
            {"name": "mock", "type": "mock"},
            {
                "name": "up",
                "type": "openai",
                "base_url": upstream_url + "/v1",
                "api_key_env": UPSTREAM_KEY_ENV,
                "timeout_s": 1.0,
            },
            {
                "name": "anth",
                "type": "anthropic",
                "base_url": upstream_url + "/v1",
                "api_key_env": UPSTREAM_KEY_ENV,
                "timeout_s": 1.0,
            },
            {
                "name": "dead",
                "type": "openai",
                "base_url": f"http://127.0.0.1:{free_port()}/v1",
                "timeout_s": 1.0,
            },
        ],
        "models": [
            {"name": "mock-1", "provider": "mock"},
            {
                "name": "gpt-test",
                "provider": "up",
                "upstream_model": "upstream-gpt",
                "input_price_per_mtok": 2.5,
                "output_price_per_mtok": 10.0,
            },
            {"name": "dead-model", "provider": "dead"},
            {
                "name": "claude-test",
                "provider": "anth",
                "upstream_model": "claude-upstream",
                "input_price_per_mtok": 3.0,
                "output_price_per_mtok": 15.0,
            },
            *({"name": m, "provider": "up"} for m in FAKE_MODELS),
        ],
        "tenants": [
            {
                "id": "acme",
                "name": "Acme",
                "keys": [{"name": "ci", "key_sha256": hash_key(KEY_ACME)}],
            },
            {
                "id": "limited",
                "models": ["mock-1"],
                "keys": [{"name": "l", "key_sha256": hash_key(KEY_LIMITED)}],
            },
        ],
    }
    raw.update(overrides)
    return raw


@dataclass
class Gateway:
    url: str
    settings: Settings
    sink: CollectingSink
    app: Any

    @property
    def v1(self) -> str:
        return self.url + "/v1"


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    with ServerThread(fake) as server:
        fake.url = server.url  # type: ignore[attr-defined]
        yield fake


def tenants_config(
    keys: dict[str, str], policies: dict[str, dict[str, Any] | None]
) -> list[dict[str, Any]]:
    """Config `tenants` entries: one per tenant id with its key and its policy (if any)."""
    return [
        {
            "id": tenant,
            "keys": [{"key_sha256": hash_key(key)}],
            **({"policy": policies[tenant]} if policies[tenant] else {}),
        }
        for tenant, key in keys.items()
    ]


def start_gateway(raw: dict[str, Any], env: dict[str, str]) -> tuple[ServerThread, Gateway]:
    settings = parse_settings(raw, env)
    sink = CollectingSink()
    app = create_app(settings, sink=sink)
    server = ServerThread(asgi_app(app))
    return server, Gateway(server.url, settings, sink, app)


@pytest.fixture(scope="session")
def gateway(upstream: FakeUpstream) -> Iterator[Gateway]:
    env = {UPSTREAM_KEY_ENV: UPSTREAM_KEY}
    os.environ[UPSTREAM_KEY_ENV] = UPSTREAM_KEY
    server, gw = start_gateway(gateway_config(upstream.url, server={"max_body_bytes": 65536}), env)  # type: ignore[attr-defined]
    with server:
        yield gw


@pytest.fixture
def fresh_upstream(upstream: FakeUpstream) -> FakeUpstream:
    upstream.reset()
    return upstream


@pytest.fixture
async def redis_store() -> AsyncIterator[RedisStore]:
    """A RedisStore on the real local Redis under a unique prefix, removed afterwards."""
    prefix = f"rgtest-{uuid.uuid4().hex[:12]}"
    store = RedisStore.from_url(f"{REDIS_URL}?prefix={prefix}")
    yield store
    await store.close()
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()
