"""The README's first command, as a newcomer runs it: `railgate serve` on the bundled defaults."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from openai import OpenAI

from tests.conftest import REDIS_URL
from tests.servers import free_port

RAILGATE = str(Path(sys.executable).parent / "railgate")
KEY_RE = re.compile(r"^\s+(rg-[A-Za-z0-9_-]{40,})$")


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RAILGATE_") and k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str, str]:
    """Start `railgate serve`, return (process, base url, demo key)."""
    port = free_port()
    proc = subprocess.Popen(
        [RAILGATE, "serve", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    key = ""
    deadline = time.monotonic() + 20
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if m := KEY_RE.match(line.rstrip("\n")):
            key = m.group(1)
        if "Application startup complete" in line or "Uvicorn running" in line:
            break
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz").status_code == 200:
                return proc, url, key
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("railgate serve did not come up")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout:
        proc.stdout.close()


@pytest.fixture
def served() -> Iterator[tuple[str, str]]:
    proc, url, key = _start([], _env())
    try:
        yield url, key
    finally:
        _stop(proc)


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


def test_two_workers_share_a_redis_store():
    prefix = f"rgtest-{uuid.uuid4().hex[:12]}"
    env = _env() | {"RAILGATE_STORE": f"{REDIS_URL}?prefix={prefix}"}
    proc = None
    try:
        proc, url, key = _start(["--workers", "2"], env)
        assert key.startswith("rg-")
        with OpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as client:
            for _ in range(6):  # spread over both workers; each must know the key
                assert client.chat.completions.create(
                    model="mock-1", messages=[{"role": "user", "content": "hi"}]
                ).choices
        # a second start finds the demo tenant and prints no new key
        _stop(proc)
        proc = None
        proc, url, again = _start(["--workers", "2"], env)
        assert again == ""
    finally:
        if proc is not None:
            _stop(proc)
        client_ = redis.Redis.from_url(REDIS_URL)
        stored = list(client_.scan_iter(match=f"{prefix}:*"))
        assert not any(
            key.encode() in (client_.get(k) or b"") for k in stored if client_.type(k) == b"string"
        )
        if stored:
            client_.delete(*stored)
        client_.close()


def test_memory_store_refuses_several_workers():
    result = subprocess.run(
        [RAILGATE, "serve", "--workers", "2"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "$.server.workers" in result.stderr and "Traceback" not in result.stderr
