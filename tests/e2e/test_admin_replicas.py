"""The admin API across replicas: two real `railgate serve` processes share one Redis.

A tenant and a key are created through gateway A's admin API and used with the official
`openai` SDK on both gateways; a policy set through A changes what B does on its next
call; a key revoked through A is refused by both within a second.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import REDIS_URL, UPSTREAM_KEY, UPSTREAM_KEY_ENV
from tests.fakes import FakeUpstream
from tests.local_redis import redis_prefix
from tests.railgate_process import serve_env, serving, write_config
from tests.servers import ServerThread, wait_until

ADMIN_KEY = "adm-replicas-" + "f" * 40
EMAIL = "ada.lovelace@example.org"


def _chat(url: str, key: str, text: str) -> str:
    with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as client:
        reply = client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": text}]
        )
    return reply.choices[0].message.content or ""


def _refused_within(url: str, key: str, seconds: float) -> float:
    """Seconds until `key` gets 401 on `url` (fails after `seconds`)."""
    started = time.monotonic()
    while True:
        try:
            _chat(url, key, "hi")
        except openai.AuthenticationError:
            return time.monotonic() - started
        assert time.monotonic() - started < seconds, f"{url} still accepts a revoked key"
        time.sleep(0.02)


def test_admin_changes_reach_every_replica(tmp_path: Path) -> None:
    upstream = FakeUpstream()
    with ServerThread(upstream) as up, redis_prefix("rgtest-admin-repl") as prefix:
        config = write_config(
            tmp_path / "railgate.yaml",
            {
                "store": f"{REDIS_URL}?prefix={prefix}",
                "providers": [
                    {
                        "name": "up",
                        "type": "openai",
                        "base_url": up.url + "/v1",
                        "api_key_env": UPSTREAM_KEY_ENV,
                    }
                ],
                "models": [{"name": "gpt-test", "provider": "up"}],
                "tenants": [{"id": "seed"}],  # no demo tenant is created
            },
        )
        env = serve_env({UPSTREAM_KEY_ENV: UPSTREAM_KEY, "RAILGATE_ADMIN_KEY": ADMIN_KEY})
        runs = [(tmp_path / "a.log", config), (tmp_path / "b.log", config)]
        with serving(*runs, env=env) as (a, b):
            admin = httpx.Client(
                base_url=a.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
            )
            tenant = f"t-{uuid.uuid4().hex[:8]}"
            assert admin.post("/admin/v1/tenants", json={"id": tenant}).status_code == 201
            made = admin.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "app"})
            assert made.status_code == 201
            key, key_id = made.json()["key"], made.json()["id"]

            # The new key works on both replicas; no policy yet: the prompt goes as sent.
            for gw in (a, b):
                _chat(gw.url, key, f"mail {EMAIL}")
                assert EMAIL in upstream.last().body.decode()

            # A policy set through A: B redacts on its next call (within a second), once
            # the replicas have built their PII engine (in the background after start).
            for gw in (a, b):
                ready = wait_until(
                    lambda gw=gw: "rails engines ready" in gw.read_log(),
                    time.monotonic() + 20,
                    every=0.05,
                )
                assert ready, gw.read_log()
            policy = {"input": [{"pii": {"entities": ["EMAIL_ADDRESS"], "action": "redact"}}]}
            put = admin.put(f"/admin/v1/tenants/{tenant}/policy", json=policy)
            assert put.status_code == 200, put.text
            deadline = time.monotonic() + 1.0
            while True:
                _chat(b.url, key, f"mail {EMAIL}")
                if EMAIL not in upstream.last().body.decode():
                    break
                assert time.monotonic() < deadline, "B did not pick up the new policy"
                time.sleep(0.05)
            _chat(a.url, key, f"mail {EMAIL}")
            assert EMAIL not in upstream.last().body.decode()

            # Revoked through A: refused by both within a second.
            assert admin.delete(f"/admin/v1/tenants/{tenant}/keys/{key_id}").status_code in (
                200,
                204,
            )
            for gw in (a, b):
                assert _refused_within(gw.url, key, 1.0) < 1.0
            admin.close()


@pytest.fixture(autouse=True)
def _no_ambient_admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAILGATE_ADMIN_KEY", raising=False)
