"""The README's first command, as a newcomer runs it: `railgate serve` on the bundled defaults."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis
from openai import OpenAI

from tests.conftest import REDIS_URL
from tests.local_redis import redis_prefix
from tests.railgate_process import RAILGATE, serve_env, serving

KEY_RE = re.compile(r"^\s+(rg-[A-Za-z0-9_-]{40,})$")


def _demo_key(log: str) -> str:
    """The demo key `railgate serve` printed before it started serving; "" if none."""
    key = ""
    for line in log.splitlines():
        if m := KEY_RE.match(line):
            key = m.group(1)
        if "Application startup complete" in line or "Uvicorn running" in line:
            break
    return key


@contextmanager
def _served(log: Path, args: list[str], env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """`railgate serve` (no config file) until leaving: (base url, demo key)."""
    with serving((log, None), args=args, env=env, within=20) as (railgate,):
        yield railgate.url, _demo_key(railgate.read_log())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with _served(tmp_path / "serve.log", [], serve_env()) as (url, key):
        yield url, key


def test_newcomer_gets_a_demo_key_and_an_answer(served):
    url, key = served
    assert key.startswith("rg-")
    with OpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as client:
        assert [m.id for m in client.models.list()] == ["mock-1", "mock-judge"]
        reply = client.chat.completions.create(
            model="mock-1", messages=[{"role": "user", "content": "Hello from a newcomer"}]
        )
        assert reply.choices[0].message.content == "mock-1 heard: Hello from a newcomer"
        stream = client.chat.completions.create(
            model="mock-1", messages=[{"role": "user", "content": "Hello again"}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "mock-1 heard: Hello again"
    ready = httpx.get(url + "/readyz")
    assert ready.status_code == 200 and ready.json()["store"] is True
    assert (
        httpx.get(url + "/v1/models", headers={"authorization": "Bearer rg-wrong"}).status_code
        == 401
    )


def test_two_workers_share_a_redis_store(tmp_path: Path) -> None:
    with redis_prefix() as prefix:
        env = serve_env({"RAILGATE_STORE": f"{REDIS_URL}?prefix={prefix}"})
        with _served(tmp_path / "first.log", ["--workers", "2"], env) as (url, key):
            assert key.startswith("rg-")
            with OpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as client:
                for _ in range(6):  # spread over both workers; each must know the key
                    assert client.chat.completions.create(
                        model="mock-1", messages=[{"role": "user", "content": "hi"}]
                    ).choices
        # a second start finds the demo tenant and prints no new key
        with _served(tmp_path / "second.log", ["--workers", "2"], env) as (_, again):
            assert again == ""
        # the store holds the key's hash, never the key
        client_ = redis.Redis.from_url(REDIS_URL)
        try:
            stored = list(client_.scan_iter(match=f"{prefix}:*"))
            assert not any(
                key.encode() in (client_.get(k) or b"")
                for k in stored
                if client_.type(k) == b"string"
            )
        finally:
            client_.close()


def test_memory_store_refuses_several_workers():
    result = subprocess.run(
        [RAILGATE, "serve", "--workers", "2"],
        env=serve_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "$.server.workers" in result.stderr and "Traceback" not in result.stderr
