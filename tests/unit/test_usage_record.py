"""`record_for`: what one finished call becomes in the ledger (no I/O)."""

from __future__ import annotations

import msgspec
import pytest

from gateway.call import Call
from gateway.config import ModelRoute, ProviderConfig
from gateway.pricing import ModelPrice
from gateway.providers.mock import MockProvider
from gateway.providers.registry import Route
from gateway.schemas import Usage, parse_request, reply_decoder
from gateway.store import ApiKey, Tenant
from gateway.telemetry.tracecontext import trace_context
from gateway.tenancy import Caller
from gateway.usage import record_for
from rails.base import Finding, ModelCall
from rails.testing import make_ctx

TRACE = "0af7651916cd43dd8448eb211c80319c"
MODEL = ModelRoute(
    name="gpt-test", provider="mock", upstream_model="upstream-gpt",
    input_price_per_mtok=2.5, output_price_per_mtok=10.0,
)  # fmt: skip
BODY = b'{"model":"gpt-test","messages":[{"role":"user","content":"' + b"x" * 40 + b'"}]}'
"""Prompt estimate: 3 (priming) + 4 (one message) + 40 / 4 = 17 tokens."""


def make_call(stream: bool = False, **fields) -> Call:
    body = BODY if not stream else BODY[:-1] + b',"stream":true}'
    call = Call(
        request_id="req-1",
        caller=Caller(Tenant(id="acme"), ApiKey(id="key_1", tenant_id="acme", key_sha256="0" * 64)),
        route=Route(MODEL, MockProvider(ProviderConfig(name="mock", type="mock"))),
        request=parse_request("chat/completions", body),
        trace=trace_context({"traceparent": f"00-{TRACE}-b7ad6b7169203331-01"}),
        user="alice",
    )
    call.started = 100.0
    for name, value in fields.items():
        setattr(call, name, value)
    return call


def test_a_reported_answer_with_details_and_timings():
    usage = reply_decoder.decode(
        b'{"usage":{"prompt_tokens":1000,"completion_tokens":200,"total_tokens":1200,'
        b'"prompt_tokens_details":{"cached_tokens":600,"audio_tokens":0},'
        b'"completion_tokens_details":{"reasoning_tokens":150}}}'
    ).usage
    call = make_call(
        usage=usage, upstream_started=100.010, upstream_ended=100.210, first_byte=100.215,
        ended=100.250,
    )  # fmt: skip
    record = record_for(call)
    assert (record.request_id, record.tenant_id, record.key_id, record.user) == (
        "req-1", "acme", "key_1", "alice",
    )  # fmt: skip
    assert record.trace_id == TRACE
    assert (record.model, record.requested_model, record.upstream_model) == (
        "gpt-test", "gpt-test", "upstream-gpt",
    )  # fmt: skip
    assert (record.prompt_tokens, record.completion_tokens) == (1000, 200)
    assert (record.cached_tokens, record.reasoning_tokens) == (600, 150)
    assert record.cost_micro_usd == 1000 * 2.5 + 200 * 10
    assert record.estimated is False and record.blocked is False
    assert record.latency_ms == pytest.approx(250.0)
    assert record.upstream_ms == pytest.approx(200.0)
    assert record.overhead_ms == pytest.approx(50.0)
    assert record.ttft_ms == pytest.approx(215.0)
    assert record.guard_actions is None


def test_a_tenants_own_prices_win_over_the_list_price():
    usage = reply_decoder.decode(
        b'{"usage":{"prompt_tokens":1000,"completion_tokens":200,"total_tokens":1200}}'
    ).usage
    call = make_call(usage=usage, upstream_started=100.01, upstream_ended=100.2, ended=100.25)
    prices = {"gpt-test": ModelPrice(input_price_per_mtok=1.0, output_price_per_mtok=4.0)}
    call.caller = Caller(
        msgspec.structs.replace(call.caller.tenant, prices=prices), call.caller.key
    )
    assert record_for(call).cost_micro_usd == 1000 * 1.0 + 200 * 4.0
    other = {"another-model": ModelPrice(input_price_per_mtok=1.0)}
    call.caller = Caller(msgspec.structs.replace(call.caller.tenant, prices=other), call.caller.key)
    assert record_for(call).cost_micro_usd == 1000 * 2.5 + 200 * 10


def test_null_details_still_count_the_usage():
    usage = reply_decoder.decode(
        b'{"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6,'
        b'"prompt_tokens_details":{"cached_tokens":null},"completion_tokens_details":null}}'
    ).usage
    record = record_for(make_call(usage=usage, upstream_started=100.0, ended=100.1))
    assert (record.prompt_tokens, record.cached_tokens, record.reasoning_tokens) == (5, 0, 0)


def test_a_disconnect_without_usage_is_estimated():
    call = make_call(stream=True, upstream_started=100.01, first_byte=100.02, ended=100.5)
    call.status, call.error = 499, "client_disconnected"
    record = record_for(call)
    assert record.estimated is True
    assert (record.prompt_tokens, record.completion_tokens) == (17, 0)
    assert record.cost_micro_usd == round(17 * 2.5)
    assert record.upstream_ms is None  # not stamped: this call never reached `_finish`


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (502, "upstream_status"),
        (502, "upstream_error"),
        (504, "upstream_timeout"),
        (429, "upstream_status"),
    ],
)
def test_a_failed_call_is_not_billed(status, error):
    call = make_call(upstream_started=100.0, upstream_ended=100.1, ended=100.2)
    call.status, call.error = status, error
    record = record_for(call)
    assert (record.prompt_tokens, record.cost_micro_usd, record.estimated) == (0, 0, False)


def test_a_call_blocked_before_the_upstream_spent_nothing():
    ctx = make_ctx()
    ctx.findings.append(Finding("denylist", "rule", 0, 3, 1.0, "blocked"))
    ctx.findings.append(Finding("pii", "EMAIL_ADDRESS", 0, 3, 1.0, "redacted"))
    ctx.findings.append(Finding("pii", "PHONE_NUMBER", 4, 9, 1.0, "redacted"))
    ctx.model_calls.append(ModelCall("nemo", "judge", 30, 2, 95))
    call = make_call(guards=ctx, ended=100.004)
    call.status, call.error = 400, "content_filter"
    record = record_for(call)
    assert record.blocked is True and record.estimated is False
    assert record.guard_actions == {"denylist.blocked": 1, "pii.redacted": 2}
    assert (record.prompt_tokens, record.cost_micro_usd) == (0, 0)
    assert (record.rails_calls, record.rails_cost_micro_usd) == (1, 95)
    assert record.upstream_ms is None
    assert record.overhead_ms == record.latency_ms == pytest.approx(4.0)
    text = msgspec.json.encode(record).decode()
    assert "x" * 10 not in text  # never the prompt


def test_a_refusal_answer_counts_as_blocked():
    ctx = make_ctx()
    ctx.findings.append(Finding("denylist", "rule", 0, 3, 1.0, "blocked"))
    record = record_for(make_call(guards=ctx, usage=Usage(), ended=100.1))
    assert record.status == 200 and record.blocked is True
