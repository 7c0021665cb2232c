"""The logs of a real `railgate serve` process: JSON lines, one access line per request,
and never a prompt, a personal data value or a key.

The module starts one gateway (a tenant whose policy redacts every PII entity) in front
of the fake upstream, sends every request, stops the gateway (so every queued line is
written) and then reads its output; each test checks one property of that output.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from gateway.keys import hash_key
from rails.pii.corpus import pii_corpus
from tests.conftest import UPSTREAM_KEY, UPSTREAM_KEY_ENV
from tests.fakes import FakeUpstream
from tests.railgate_process import RailgateProcess, serve_env, write_config

TENANT = "logs-acme"
KEY = "rg-test-logs-acme-" + "e" * 40
BAD_KEY = "rg-test-not-a-key-" + "f" * 40
USER = "grace.hopper@example.com"
MARKER = "PROMPT-MARKER-7f3a9c summarise the quarterly figures"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
HEX32, HEX16 = re.compile(r"^[0-9a-f]{32}$"), re.compile(r"^[0-9a-f]{16}$")
CORPUS = pii_corpus(n=80, seed=5)


@dataclass
class Served:
    log: str
    statuses: dict[str, int]
    """Request id → the status the client got."""

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.log.splitlines()]

    def access(self, request_id: str) -> list[dict[str, Any]]:
        return [
            x
            for x in self.lines
            if x["logger"] == "railgate.access" and x.get("request_id") == request_id
        ]


def _config(upstream_url: str) -> dict[str, Any]:
    return {
        "store": "memory://",
        "providers": [
            {
                "name": "up",
                "type": "openai",
                "base_url": upstream_url + "/v1",
                "api_key_env": UPSTREAM_KEY_ENV,
                "timeout_s": 10.0,
            }
        ],
        "models": [
            {
                "name": "gpt-test",
                "provider": "up",
                "upstream_model": "upstream-gpt",
                "input_price_per_mtok": 2.5,
                "output_price_per_mtok": 10.0,
            }
        ],
        "tenants": [
            {
                "id": TENANT,
                "keys": [{"name": "ci", "key_sha256": hash_key(KEY)}],
                "policy": {"input": [{"pii": {"action": "redact"}}]},
            }
        ],
    }


def _chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-test", "messages": [{"role": "user", "content": text}], **extra}


def _send(http: httpx.Client, railgate: RailgateProcess, statuses: dict[str, int]) -> None:
    def post(rid: str, body: dict[str, Any], key: str = KEY, **extra: str) -> None:
        headers = {"authorization": f"Bearer {key}", "x-request-id": rid, **extra}
        with http.stream("POST", railgate.chat, json=body, headers=headers) as answer:
            answer.read()
            statuses[rid] = answer.status_code

    post(
        "acc-normal",
        _chat(f"{MARKER} and mail {USER}", user=USER),
        traceparent=f"00-{TRACE_ID}-00f067aa0ba902b7-01",
    )
    post(
        "acc-stream",
        _chat(MARKER, stream=True, stream_options={"include_usage": True}),
        **{"x-railgate-user": USER},
    )
    post("acc-bad-key", _chat(MARKER), key=BAD_KEY)
    post("acc-unknown-model", {**_chat(MARKER), "model": "no-such-model"})
    health = http.get(railgate.url + "/healthz", headers={"x-request-id": "acc-health"})
    statuses["acc-health"] = health.status_code
    for i, sample in enumerate(CORPUS):
        post(f"acc-pii-{i}", _chat(sample.text, stream=i % 2 == 1), **{"x-railgate-user": USER})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("access-log")
    config = write_config(tmp / "railgate.yaml", _config(upstream.url))  # type: ignore[attr-defined]
    railgate = RailgateProcess.start(  # debug: no line may carry content at any level
        tmp / "serve.log",
        config,
        args=["--log-level", "debug"],
        env=serve_env({UPSTREAM_KEY_ENV: UPSTREAM_KEY}),
    )
    statuses: dict[str, int] = {}
    try:
        railgate.wait_healthy(time.monotonic() + 30)
        with httpx.Client(timeout=30) as http:
            _send(http, railgate, statuses)
    finally:
        railgate.stop()  # SIGTERM: a graceful stop writes every queued line
    assert railgate.proc.returncode == 128 + 15, railgate.read_log()[-2000:]
    yield Served(railgate.read_log(), statuses)


def test_every_line_is_json(served):
    assert served.log.strip()
    for line in served.log.splitlines():
        record = orjson.loads(line)
        assert {"ts", "level", "logger", "message"} <= set(record), line
    assert any(x["message"] == "Application startup complete." for x in served.lines)
    assert served.lines[-1]["message"].startswith("Finished server process")


def test_one_access_line_per_request(served):
    assert served.statuses["acc-normal"] == 200
    for rid, status in served.statuses.items():
        lines = served.access(rid)
        assert len(lines) == 1, (rid, lines)
        (line,) = lines
        assert line["status"] == status and line["level"] == "INFO", line
        assert line["message"] == "access"
    assert served.statuses["acc-unknown-model"] == 404
    assert served.access("acc-unknown-model")[0]["error"] == "model_not_found"
    assert served.access("acc-health")[0] | {"duration_ms": 0, "ts": ""} == {
        "ts": "",
        "level": "INFO",
        "logger": "railgate.access",
        "message": "access",
        "request_id": "acc-health",
        "trace_id": None,
        "client_ip": "127.0.0.1",
        "method": "GET",
        "path": "/healthz",
        "status": 200,
        "error": None,
        "duration_ms": 0,
    }


def test_a_call_line_has_ids_tokens_cost_and_timings(served):
    (line,) = served.access("acc-normal")
    assert line["trace_id"] == TRACE_ID  # the client's trace, continued
    assert HEX16.match(line["span_id"]) and line["span_id"] != "00f067aa0ba902b7"
    assert (line["tenant_id"], line["key_id"], line["client_ip"]) == (
        TENANT,
        f"cfg_{TENANT}_0",
        "127.0.0.1",
    )
    assert (line["method"], line["path"], line["model"], line["provider"]) == (
        "POST",
        "/v1/chat/completions",
        "gpt-test",
        "up",
    )
    assert (line["prompt_tokens"], line["completion_tokens"], line["stream"]) == (11, 4, False)
    assert line["cost_usd"] == 68 / 1e6  # 11 * 2.5 + 4 * 10 = 67.5 micro-USD, rounded up
    assert line["duration_ms"] >= line["upstream_ms"] > 0 and line["overhead_ms"] >= 0
    assert line["guard_actions"] == {"pii.redacted": 1} and line["blocked"] is False


def test_the_stream_line_has_its_tokens(served):
    (line,) = served.access("acc-stream")
    assert HEX32.match(line["trace_id"]) and HEX16.match(line["span_id"])
    assert (line["stream"], line["status"]) == (True, 200)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (11, 4)
    assert line["ttft_ms"] is not None and line["ttft_ms"] <= line["duration_ms"]


def test_refused_requests_are_logged_with_their_status(served):
    (bad,) = served.access("acc-bad-key")
    assert (bad["status"], bad["error"], bad["path"]) == (
        401,
        "invalid_api_key",
        "/v1/chat/completions",
    )
    assert HEX32.match(bad["trace_id"]) and "tenant_id" not in bad
    (unknown,) = served.access("acc-unknown-model")
    assert unknown["status"] == 404 and HEX32.match(unknown["trace_id"])


def test_no_prompt_pii_end_user_or_key_in_the_logs(served):
    assert all(served.statuses[f"acc-pii-{i}"] == 200 for i in range(len(CORPUS)))
    secrets = [MARKER, "PROMPT-MARKER", USER, KEY, BAD_KEY, UPSTREAM_KEY, hash_key(KEY)]
    for sample in CORPUS:
        secrets.append(sample.text)
        secrets.extend(sample.text[a:b] for _, a, b in sample.labels)
    leaked = [s for s in secrets if s in served.log]
    assert leaked == []
