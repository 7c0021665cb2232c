"""`/metrics` through a real gateway: a mix of calls made with the OpenAI SDK and httpx,
then the exposition read back with prometheus_client's parser. Counts, tokens and cost
are exact; no request id or end user ever becomes a label value."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from openai import BadRequestError, InternalServerError, OpenAI
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    KEY_ACME,
    UPSTREAM_KEY,
    UPSTREAM_KEY_ENV,
    Gateway,
    gateway_config,
    start_gateway,
)
from tests.fakes import FakeUpstream
from tests.servers import wait_until

PROMPT_TOKENS, COMPLETION_TOKENS = 11, 4  # what the fake upstream reports for every answer
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def metrics_gateway(upstream: FakeUpstream) -> Iterator[Gateway]:
    """A gateway of this module's own, so that no other test's calls are counted."""
    raw = gateway_config(upstream.url)  # type: ignore[attr-defined]
    raw["tenants"][0]["policy"] = {"input": [{"denylist": {"terms": ["forbidden"]}}]}
    server, gw = start_gateway(raw, {UPSTREAM_KEY_ENV: UPSTREAM_KEY})
    with server:
        yield gw


def scrape(gw: Gateway) -> tuple[str, Samples]:
    resp = httpx.get(gw.url + "/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }
    return resp.text, samples


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def test_metrics_count_a_mix_of_calls_exactly(metrics_gateway: Gateway) -> None:
    gw = metrics_gateway
    user, request_id = f"user-{uuid.uuid4().hex}", f"rid-{uuid.uuid4().hex}"
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    with OpenAI(base_url=gw.v1, api_key=KEY_ACME, max_retries=0) as client:
        reply = client.chat.completions.create(model="gpt-test", messages=messages)
        assert reply.usage is not None and reply.usage.prompt_tokens == PROMPT_TOKENS
        stream = client.chat.completions.create(
            model="gpt-test",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        client.chat.completions.create(
            model="gpt-test",
            messages=messages,
            user=user,
            extra_headers={"x-request-id": request_id},
        )
        with pytest.raises(InternalServerError):  # the upstream answers 500: a 502
            client.chat.completions.create(model="status-500", messages=messages)
        with pytest.raises(BadRequestError):  # the tenant's denylist blocks it
            client.chat.completions.create(
                model="gpt-test",
                messages=[{"role": "user", "content": "something forbidden"}],
            )
    with httpx.Client(base_url=gw.url) as http:
        body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
        bad_key = {"authorization": "Bearer rg-not-a-key"}
        assert http.post("/v1/chat/completions", json=body, headers=bad_key).status_code == 401
        unknown = {**body, "model": "no-such-model"}
        auth = {"authorization": f"Bearer {KEY_ACME}"}
        assert http.post("/v1/chat/completions", json=unknown, headers=auth).status_code == 404
        assert http.get("/no-such-route").status_code == 404

    calls = 5  # the 401 and the 404 never became calls
    scraped: list[tuple[str, Samples]] = []

    def observed() -> bool:  # observers run after the answer, in a background task
        scraped[:] = [scrape(gw)]
        counts = series(scraped[0][1], "railgate_request_duration_seconds_count")
        return sum(counts.values()) == calls

    assert wait_until(observed, time.monotonic() + 5, every=0.05), scraped[0][0]
    text, samples = scraped[0]

    acme = {"tenant": "acme", "model": "gpt-test"}
    assert series(samples, "railgate_requests_total") == {
        labels(**acme, status="200"): 3,
        labels(**acme, status="400"): 1,
        labels(tenant="acme", model="status-500", status="502"): 1,
        labels(tenant="", model="", status="401"): 1,
        labels(tenant="", model="", status="404"): 1,
    }
    assert series(samples, "railgate_tokens_total") == {
        labels(**acme, kind="prompt"): 3 * PROMPT_TOKENS,
        labels(**acme, kind="completion"): 3 * COMPLETION_TOKENS,
    }
    model = next(m for m in gw.settings.models if m.name == "gpt-test")
    per_call = round(
        PROMPT_TOKENS * model.input_price_per_mtok + COMPLETION_TOKENS * model.output_price_per_mtok
    )  # integer micro-USD per call, as the ledger prices it
    assert series(samples, "railgate_cost_usd_total") == {
        labels(**acme): pytest.approx(3 * per_call / 1_000_000, rel=1e-12)
    }

    def count(name: str, model: str = "gpt-test") -> float:
        return samples.get((f"{name}_count", labels(model=model)), 0)

    assert count("railgate_request_duration_seconds") == 4
    assert count("railgate_request_duration_seconds", "status-500") == 1
    assert count("railgate_gateway_overhead_seconds") == 4
    assert count("railgate_upstream_duration_seconds") == 3  # the blocked call never left
    assert count("railgate_upstream_duration_seconds", "status-500") == 1
    assert count("railgate_time_to_first_token_seconds") == 1  # streams only
    assert count("railgate_time_to_first_token_seconds", "status-500") == 0
    for name in ("railgate_request_duration_seconds", "railgate_gateway_overhead_seconds"):
        bucket = (f"{name}_bucket", labels(model="gpt-test", le="+Inf"))
        assert samples[bucket] == 4
        assert samples[(f"{name}_sum", labels(model="gpt-test"))] > 0

    assert series(samples, "railgate_upstream_errors_total") == {
        labels(provider="up", code="upstream_error"): 1
    }
    assert series(samples, "railgate_blocked_total") == {labels(tenant="acme"): 1}
    assert series(samples, "railgate_guard_actions_total") == {
        labels(tenant="acme", action="denylist.blocked"): 1
    }
    assert series(samples, "railgate_http_requests_total")[labels(status="404")] == 1

    assert user not in text
    assert request_id not in text
    assert "no-such-route" not in text
