"""Which rules a call gets, their store keys and periods, the token estimate, headers."""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from gateway.call import Call
from gateway.config import ModelRoute, ProviderConfig
from gateway.limits import plan
from gateway.limits.limiter import _duration, _headers
from gateway.limits.plan import (
    BUDGET_GRACE_MS,
    _periods,
    call_rules,
    fail_mode,
    has_limits,
    provider_rules,
)
from gateway.limits.rules import TOKENS, Rule, Verdict
from gateway.limits.spec import Limits, ModelLimits, ProviderLimits
from gateway.limits.tokens import estimate_tokens
from gateway.providers.base import Endpoint
from gateway.providers.mock import MockProvider
from gateway.providers.registry import Route
from gateway.schemas import parse_request
from gateway.store.base import ApiKey, Tenant
from gateway.telemetry.tracecontext import trace_context
from gateway.tenancy import Caller

CHAT = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}


def make_call(
    tenant_limits: Limits | None = None,
    key_limits: Limits | None = None,
    model_limits: dict[str, ModelLimits] | None = None,
    body: dict[str, Any] | None = None,
    endpoint: Endpoint = "chat/completions",
    model: str = "gpt-x",
) -> Call:
    tenant = Tenant(id="acme", limits=tenant_limits, model_limits=model_limits)
    key = ApiKey(id="key_1", tenant_id="acme", key_sha256="0" * 64, limits=key_limits)
    provider = MockProvider(ProviderConfig(name="mock", type="mock"))
    route = Route(ModelRoute(name=model, provider="mock"), provider)
    request = parse_request(endpoint, orjson.dumps(body or {**CHAT, "model": model}))
    return Call("req_1", Caller(tenant, key), route, request, trace=trace_context({}))


def utc(*fields: int, ms: int = 0) -> float:
    return calendar.timegm((*fields, *(0,) * (6 - len(fields)))) + ms / 1000


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Freeze `plan`'s wall clock at a given UTC instant."""

    def freeze(at: float) -> None:
        monkeypatch.setattr(plan, "time", SimpleNamespace(time=lambda: at, gmtime=time.gmtime))

    return freeze


# -- has_limits / fail_mode ------------------------------------------------------------


def test_has_limits():
    assert not has_limits(make_call())
    assert not has_limits(make_call(Limits()))
    assert not has_limits(make_call(Limits(fail_mode="closed")))  # a mode limits nothing
    assert has_limits(make_call(Limits(rpm=1)))
    assert has_limits(make_call(key_limits=Limits(budget_usd_month=5)))
    assert not has_limits(make_call(model_limits={"other": ModelLimits(rpm=1)}))
    assert has_limits(make_call(model_limits={"gpt-x": ModelLimits(tpm=100)}))


def test_fail_mode_is_closed_when_tenant_or_key_says_so():
    assert fail_mode(make_call()) == "open"
    assert fail_mode(make_call(Limits(rpm=1), Limits(rpm=1))) == "open"
    assert fail_mode(make_call(Limits(rpm=1, fail_mode="closed"))) == "closed"
    assert fail_mode(make_call(Limits(rpm=1), Limits(fail_mode="closed"))) == "closed"


# -- call_rules ------------------------------------------------------------------------


def test_call_rules_for_every_scope(frozen):
    frozen(utc(2024, 2, 29, 23, 59, 59, ms=250))  # the last second of a leap February
    call = make_call(
        Limits(rpm=60, tpm=1000, concurrency=2, budget_usd_day=1.5, budget_usd_month=20),
        Limits(rps=5, budget_usd_day=0.25),
        {"gpt-x": ModelLimits(rpm=10, tpm=500), "other": ModelLimits(rpm=1)},
    )
    left = 750 + BUDGET_GRACE_MS
    rules, valid_s = call_rules(call, lease_ms=30_000)
    assert valid_s == 0.75  # the day ends in 750 ms: the list is rebuilt then
    assert list(rules) == [
        # budgets first, in scope order
        Rule("{acme}:rl:t:usd:d:20240229", "budget", 1_500_000, left, 0, "usd", "daily budget"),
        Rule("{acme}:rl:t:usd:m:202402", "budget", 20_000_000, left, 0, "usd", "monthly budget"),
        Rule(
            "{acme}:rl:k:key_1:usd:d:20240229",
            "budget",
            250_000,
            left,
            0,
            "usd",
            "daily budget (key)",
        ),
        Rule("{acme}:rl:t:rpm", "window", 60, 60_000, 1, "requests", "requests per minute"),
        Rule("{acme}:rl:t:tpm", "window", 1000, 60_000, TOKENS, "tokens", "tokens per minute"),
        Rule("{acme}:rl:t:conc", "lease", 2, 30_000, 1, "concurrency", "concurrent requests"),
        Rule(
            "{acme}:rl:k:key_1:rps", "window", 5, 1_000, 1, "requests", "requests per second (key)"
        ),
        Rule(
            "{acme}:rl:m:gpt-x:rpm",
            "window",
            10,
            60_000,
            1,
            "requests",
            "requests per minute (gpt-x)",
        ),
        Rule(
            "{acme}:rl:m:gpt-x:tpm",
            "window",
            500,
            60_000,
            TOKENS,
            "tokens",
            "tokens per minute (gpt-x)",
        ),
    ]


def test_every_key_carries_the_tenant_hash_tag(frozen):
    frozen(utc(2024, 6, 1, 8))
    call = make_call(
        Limits(rps=1, rpm=1, tpm=1, concurrency=1, budget_usd_day=1, budget_usd_month=1),
        Limits(rps=1, rpm=1, tpm=1, concurrency=1, budget_usd_day=1, budget_usd_month=1),
        {"gpt-x": ModelLimits(rpm=1, tpm=1)},
    )
    rules = call_rules(call, lease_ms=1000)[0]
    assert len(rules) == 14
    assert all(r.key.startswith("{acme}:rl:") for r in rules)
    assert len({r.key for r in rules}) == 14
    assert [r.kind for r in rules[:4]] == ["budget"] * 4
    assert "budget" not in {r.kind for r in rules[4:]}


def test_only_the_calls_model_limits_apply(frozen):
    frozen(utc(2024, 6, 1))
    call = make_call(model_limits={"other": ModelLimits(rpm=1)})
    assert call_rules(call, lease_ms=1000)[0] == ()


def test_budget_amounts_round_to_micro_usd(frozen):
    frozen(utc(2024, 6, 1))
    rules = call_rules(make_call(Limits(budget_usd_month=0.1234567)), lease_ms=1000)[0]
    assert [(r.limit, r.amount, r.unit) for r in rules] == [(123_457, 0, "usd")]


def test_a_zero_daily_budget_refuses_all_spend(frozen):
    frozen(utc(2024, 6, 1))
    rules = call_rules(make_call(Limits(budget_usd_day=0)), lease_ms=1000)[0]
    assert [(r.kind, r.limit) for r in rules] == [("budget", 0)]


def test_a_zero_monthly_budget_is_a_rule():
    rules = call_rules(make_call(Limits(budget_usd_month=0)), lease_ms=1000)[0]
    assert [(r.kind, r.limit) for r in rules] == [("budget", 0)]


# -- budget periods --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(2023, 12, 15, 12), ("20231215", 43_200_000, "202312", (16 * 86_400 + 43_200) * 1000)),
        (utc(2023, 12, 31, 23), ("20231231", 3_600_000, "202312", 3_600_000)),  # year end
        (utc(2024, 1, 1), ("20240101", 86_400_000, "202401", 31 * 86_400_000)),
        (utc(2023, 2, 28), ("20230228", 86_400_000, "202302", 86_400_000)),
        (utc(2024, 2, 28), ("20240228", 86_400_000, "202402", 2 * 86_400_000)),  # leap year
        (utc(2024, 4, 30, 23, 59, 59, ms=500), ("20240430", 500, "202404", 500)),
    ],
)
def test_periods(now, expected):
    assert _periods(now) == expected


def test_budget_windows_follow_the_period_end(frozen):
    frozen(utc(2024, 1, 31, 18))
    rules, valid_s = call_rules(make_call(Limits(budget_usd_day=1, budget_usd_month=10)), 1000)
    assert valid_s == 1.0
    day, month = rules
    assert day.key.endswith(":usd:d:20240131")
    assert month.key.endswith(":usd:m:202401")
    assert day.window_ms == month.window_ms == 6 * 3_600_000 + BUDGET_GRACE_MS
    frozen(utc(2024, 2, 1))
    day, month = call_rules(make_call(Limits(budget_usd_day=1, budget_usd_month=10)), 1000)[0]
    assert day.key.endswith(":usd:d:20240201")
    assert month.key.endswith(":usd:m:202402")
    assert day.window_ms == 86_400_000 + BUDGET_GRACE_MS
    assert month.window_ms == 29 * 86_400_000 + BUDGET_GRACE_MS


# -- provider pacing rules -------------------------------------------------------------


def test_provider_rules():
    rules, block = provider_rules("up", ProviderLimits(rpm=100, tpm=5000))
    assert block == "{provider:up}:pace:block"
    assert list(rules) == [
        Rule(
            "{provider:up}:pace:rpm",
            "window",
            100,
            60_000,
            1,
            "requests",
            "provider up requests per minute",
        ),
        Rule(
            "{provider:up}:pace:tpm",
            "window",
            5000,
            60_000,
            TOKENS,
            "tokens",
            "provider up tokens per minute",
        ),
    ]
    only_tpm, _ = provider_rules("up", ProviderLimits(tpm=10))
    assert [(r.key, r.amount) for r in only_tpm] == [("{provider:up}:pace:tpm", TOKENS)]
    assert provider_rules("up", ProviderLimits()) == ((), "{provider:up}:pace:block")


# -- token estimate --------------------------------------------------------------------


def estimate(
    body: dict[str, Any], endpoint: Endpoint = "chat/completions", default: int = 1024
) -> tuple[int, int]:
    return estimate_tokens(parse_request(endpoint, orjson.dumps(body)), default)


def test_chat_estimate_counts_text_parts_images_and_tool_calls():
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are terse."},  # 14 chars: 4
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "abcdefghi"},  # 9 chars: 3
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"city": "Lagos"}'},  # 17: 5
                    },
                    {"id": "c2", "type": "custom"},  # no function: nothing
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": ""},
        ],
    }
    # priming 3 + 4 messages x 4 + 4 + (3 + 85) + 5 + 0
    assert estimate(body) == (3 + 16 + 4 + 88 + 5, 1024)


def test_output_allowance():
    assert estimate(CHAT, default=77) == (8, 77)  # "hi": 1 + 4 per message + 3 priming
    assert estimate({**CHAT, "max_tokens": 100}) == (8, 100)
    assert estimate({**CHAT, "max_tokens": 100, "max_completion_tokens": 50}) == (8, 50)
    assert estimate({**CHAT, "max_completion_tokens": 50}) == (8, 50)
    assert estimate({**CHAT, "max_tokens": 0}) == (8, 0)
    assert estimate({**CHAT, "max_tokens": 100, "n": 3}) == (8, 300)
    assert estimate({**CHAT, "n": 2}, default=10) == (8, 20)
    assert estimate({**CHAT, "n": None}, default=10) == (8, 10)


def test_completion_estimate():
    def completion(prompt: Any, **extra: Any) -> tuple[int, int]:
        return estimate({"model": "m", "prompt": prompt, **extra}, "completions", default=16)

    assert completion("hello world") == (3, 16)
    assert completion(["abcd", "abcdefgh"]) == (3, 16)
    assert completion([1, 2, 3]) == (3, 16)  # token ids
    assert completion([[1, 2], [3, 4, 5]]) == (5, 16)
    assert completion("x", max_tokens=7, n=2) == (1, 14)


def test_embedding_estimate_has_no_output():
    def embedding(value: Any) -> tuple[int, int]:
        return estimate({"model": "m", "input": value, "max_tokens": 99}, "embeddings")

    assert embedding("abcdefgh") == (2, 0)
    assert embedding(["ab", "abcde"]) == (3, 0)
    assert embedding([[1, 2, 3]]) == (3, 0)


# -- limiter helpers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (-5, "0ms"),
        (0, "0ms"),
        (250, "250ms"),
        (999, "999ms"),
        (1000, "1s"),
        (1500, "1.5s"),
        (59_999, "59.999s"),
        (60_000, "1m0s"),
        (90_500, "1m30.5s"),
        (360_000, "6m0s"),
    ],
)
def test_duration(ms, text):
    assert _duration(ms) == text


def test_headers_report_the_tightest_window_per_unit():
    rules = [
        Rule("b", "budget", 10, 5_000, 0, "usd", "daily budget"),
        Rule("t:rpm", "window", 100, 60_000, 1, "requests", "rpm"),
        Rule("k:rps", "window", 20, 1_000, 1, "requests", "rps (key)"),
        Rule("t:tpm", "window", 1000, 60_000, 300, "tokens", "tpm"),
        Rule("m:tpm", "window", 5000, 60_000, 300, "tokens", "tpm (model)"),
        Rule("c", "lease", 1, 30_000, 1, "concurrency", "concurrent"),
    ]
    verdict = Verdict(
        refused=None,
        retry_ms=0,
        used=(3, 10, 15, 900, 900, 1),
        reset_ms=(5_000, 59_000, 250, 1_500, 90_000, 0),
    )
    assert _headers(rules, verdict) == {
        "x-ratelimit-limit-requests": "20",
        "x-ratelimit-remaining-requests": "5",
        "x-ratelimit-reset-requests": "250ms",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "100",
        "x-ratelimit-reset-tokens": "1.5s",
    }


def test_headers_clamp_remaining_and_skip_missing_units():
    rules = [Rule("t:rpm", "window", 5, 60_000, 1, "requests", "rpm")]
    verdict = Verdict(refused=None, retry_ms=0, used=(7,), reset_ms=(61_000,))
    assert _headers(rules, verdict) == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1m1s",
    }
    lease_only = [Rule("c", "lease", 1, 1_000, 1, "concurrency", "c")]
    assert _headers(lease_only, Verdict(None, 0, (1,), (0,))) == {}
