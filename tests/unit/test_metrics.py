"""The metrics registry (`gateway.metrics`) and the per-call observer that feeds it.

The exposition is read back with prometheus_client's parser, so a test passes only if
a Prometheus server would read the same values."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.ledger.records import UsageRecord
from gateway.metrics import (
    DECLARED,
    LATENCY_BUCKETS,
    MAX_SERIES,
    OTHER,
    OVERHEAD_BUCKETS,
    Counter,
    Counters,
    Histogram,
)
from gateway.telemetry.metrics import CallMetrics
from gateway.telemetry.observer import Exchange


def samples(counters: Counters) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition: (sample name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(counters.render().decode())
        for s in family.samples
    }


def value(counters: Counters, name: str, **labels: str) -> float:
    return samples(counters)[(name, frozenset(labels.items()))]


def series_of(counters: Counters, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples(counters).items() if n == name}


# -- the registry ----------------------------------------------------------------------


def test_old_inc_api_is_unchanged() -> None:
    counters = Counters()
    counters.inc("railgate_limits_rejected_total", "rpm")
    counters.inc("railgate_limits_rejected_total", "rpm", by=2)
    counters.inc("railgate_limits_rejected_total", "tpm")
    counters.inc("railgate_limits_fail_open_total")
    counters.inc("railgate_usage_dropped_total", by=5)

    assert counters.get("railgate_limits_rejected_total", "rpm") == 3
    assert counters.get("railgate_limits_rejected_total", "tpm") == 1
    assert counters.get("railgate_limits_rejected_total") == 0
    assert counters.get("railgate_limits_fail_open_total") == 1
    assert counters.get("railgate_usage_dropped_total") == 5
    lines = counters.render().decode().splitlines()
    assert 'railgate_limits_rejected_total{kind="rpm"} 3' in lines
    assert 'railgate_limits_rejected_total{kind="tpm"} 1' in lines
    assert "railgate_limits_fail_open_total 1" in lines
    assert "railgate_usage_dropped_total 5" in lines
    assert "railgate_usage_written_total 0" in lines  # never incremented: still served
    assert "railgate_pacing_rejected_total 0" in lines


def test_a_single_label_is_named_by_its_declaration() -> None:
    counters = Counters()
    counters.inc("railgate_telemetry_dropped_total", "otlp", by=3)
    counters.inc("railgate_telemetry_exported_total", "otlp", by=40)
    counters.inc("railgate_telemetry_exported_total", "langfuse", by=2)

    lines = counters.render().decode().splitlines()
    assert 'railgate_telemetry_dropped_total{exporter="otlp"} 3' in lines
    assert series_of(counters, "railgate_telemetry_exported_total") == {
        frozenset({("exporter", "otlp")}): 40,
        frozenset({("exporter", "langfuse")}): 2,
    }
    assert counters.get("railgate_telemetry_exported_total", "otlp") == 40


def test_counters_with_several_labels_keep_one_series_per_label_set() -> None:
    counters = Counters()
    counters.add("railgate_requests_total", ("acme", "gpt-4o", "200"))
    counters.add("railgate_requests_total", ("acme", "gpt-4o", "200"))
    counters.add("railgate_requests_total", ("acme", "gpt-4o", "429"))
    counters.add("railgate_requests_total", ("beta", "gpt-4o", "200"), by=5)

    assert series_of(counters, "railgate_requests_total") == {
        frozenset({("tenant", "acme"), ("model", "gpt-4o"), ("status", "200")}): 2,
        frozenset({("tenant", "acme"), ("model", "gpt-4o"), ("status", "429")}): 1,
        frozenset({("tenant", "beta"), ("model", "gpt-4o"), ("status", "200")}): 5,
    }


def test_a_labelled_counter_without_series_renders_no_sample() -> None:
    text = Counters().render().decode()
    assert "# TYPE railgate_tokens_total counter" in text
    assert not any(line.startswith("railgate_tokens_total") for line in text.splitlines())


def test_counters_add_floats() -> None:
    counters = Counters()
    counters.add("railgate_cost_usd_total", ("acme", "gpt-4o"), 0.25)
    counters.add("railgate_cost_usd_total", ("acme", "gpt-4o"), 0.5)
    counters.add("railgate_cost_usd_total", ("acme", "mini"), 68 / 1_000_000)

    assert value(counters, "railgate_cost_usd_total", tenant="acme", model="gpt-4o") == 0.75
    assert value(counters, "railgate_cost_usd_total", tenant="acme", model="mini") == 6.8e-05


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    counters = Counters()
    for seconds in (0.005, 0.0051, 0.3, 120.0, 121.0):  # a bound itself is in its bucket
        counters.observe("railgate_request_duration_seconds", seconds, ("gpt-4o",))
    counters.observe("railgate_request_duration_seconds", 0.3, ("mini",))

    buckets = {
        dict(labels)["le"]: v
        for labels, v in series_of(counters, "railgate_request_duration_seconds_bucket").items()
        if ("model", "gpt-4o") in labels
    }
    assert list(buckets) == [*(str(float(b)) for b in LATENCY_BUCKETS), "+Inf"]
    assert buckets["0.005"] == 1
    assert buckets["0.01"] == 2
    assert buckets["0.25"] == 2
    assert buckets["0.5"] == 3
    assert buckets["60.0"] == 3
    assert buckets["120.0"] == 4
    assert buckets["+Inf"] == 5
    counts = list(buckets.values())
    assert counts == sorted(counts)
    model = {"model": "gpt-4o"}
    assert value(counters, "railgate_request_duration_seconds_count", **model) == 5
    assert value(counters, "railgate_request_duration_seconds_sum", **model) == pytest.approx(
        0.005 + 0.0051 + 0.3 + 120.0 + 121.0
    )
    assert value(counters, "railgate_request_duration_seconds_count", model="mini") == 1


def test_gateway_overhead_has_finer_buckets() -> None:
    counters = Counters()
    counters.observe("railgate_gateway_overhead_seconds", 0.0002, ("gpt-4o",))
    counters.observe("railgate_gateway_overhead_seconds", 2.0, ("gpt-4o",))

    buckets = {
        dict(labels)["le"]: v
        for labels, v in series_of(counters, "railgate_gateway_overhead_seconds_bucket").items()
    }
    assert list(buckets) == [*(str(float(b)) for b in OVERHEAD_BUCKETS), "+Inf"]
    assert (buckets["0.0001"], buckets["0.00025"], buckets["1.0"], buckets["+Inf"]) == (0, 1, 1, 2)


def test_new_label_sets_beyond_the_limit_fold_into_other() -> None:
    counters = Counters(max_series=3)
    for tenant in ("a", "b", "c", "d", "e"):
        counters.add("railgate_requests_total", (tenant, "m", "200"))
    counters.add("railgate_requests_total", ("a", "m", "200"))  # known: not folded
    for model in ("m1", "m2", "m3", "m4"):
        counters.observe("railgate_upstream_duration_seconds", 0.1, (model,))

    series = series_of(counters, "railgate_requests_total")
    other = frozenset({("tenant", OTHER), ("model", OTHER), ("status", OTHER)})
    assert series[other] == 2
    assert series[frozenset({("tenant", "a"), ("model", "m"), ("status", "200")})] == 2
    assert len(series) == 4
    durations = series_of(counters, "railgate_upstream_duration_seconds_count")
    assert durations == {frozenset({("model", m)}): 1 for m in ("m1", "m2", "m3", OTHER)}
    folds = series_of(counters, "railgate_metrics_overflow_total")
    assert folds == {
        frozenset({("metric", "railgate_requests_total")}): 2,
        frozenset({("metric", "railgate_upstream_duration_seconds")}): 1,
    }


def test_the_default_limit_is_a_thousand_label_sets() -> None:
    counters = Counters()
    for i in range(MAX_SERIES + 1):
        counters.add("railgate_guard_actions_total", (f"t{i}", "pii.redacted"))

    assert MAX_SERIES == 1000
    series = series_of(counters, "railgate_guard_actions_total")
    assert len(series) == MAX_SERIES + 1
    assert series[frozenset({("tenant", OTHER), ("action", OTHER)})] == 1
    folds = {"metric": "railgate_guard_actions_total"}
    assert value(counters, "railgate_metrics_overflow_total", **folds) == 1


def test_label_values_are_escaped() -> None:
    counters = Counters()
    tricky = 'a\\b"c\nd'
    counters.add("railgate_requests_total", (tricky, "m", "200"))

    assert 'tenant="a\\\\b\\"c\\nd"' in counters.render().decode()
    assert value(counters, "railgate_requests_total", tenant=tricky, model="m", status="200") == 1


def test_undeclared_names_and_wrong_label_counts_are_refused() -> None:
    counters = Counters()
    with pytest.raises(KeyError):
        counters.inc("railgate_nonexistent_total")
    with pytest.raises(KeyError):
        counters.observe("railgate_requests_total", 1.0, ("a", "b", "c"))  # not a histogram
    with pytest.raises(ValueError, match="takes 3 label values"):
        counters.add("railgate_requests_total", ("acme", "gpt-4o"))


def test_every_family_parses_with_its_declared_type() -> None:
    counters = Counters()
    for metric in DECLARED:
        labels = tuple(f"{name}-value" for name in metric.labels)
        if isinstance(metric, Histogram):
            counters.observe(metric.name, 0.01, labels)
        else:
            counters.add(metric.name, labels, 1.5)

    families = {f.name: f for f in text_string_to_metric_families(counters.render().decode())}
    for metric in DECLARED:
        kind = "counter" if isinstance(metric, Counter) else "histogram"
        family = families[metric.name.removesuffix("_total")]
        assert family.type == kind, metric.name
        assert family.samples, metric.name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == set(metric.labels), sample
    assert len(families) == len(DECLARED)


# -- CallMetrics -----------------------------------------------------------------------


def record(**fields: Any) -> UsageRecord:
    base = UsageRecord(
        request_id="req-1",
        tenant_id="acme",
        key_id="key-1",
        model="gpt-test",
        provider="up",
        endpoint="chat/completions",
        stream=False,
        status=200,
        error=None,
        user="user-1",
        prompt_tokens=11,
        completion_tokens=4,
        cost_micro_usd=68,
        latency_ms=250.0,
        ttft_ms=None,
        timestamp=0.0,
        upstream_ms=240.0,
        overhead_ms=10.0,
    )
    return dataclasses.replace(base, **fields)


def test_a_finished_call_updates_its_series() -> None:
    counters = Counters()
    metrics = CallMetrics(counters)
    metrics.finished(None, record())  # type: ignore[arg-type]  # the call is not read
    metrics.finished(
        None,  # type: ignore[arg-type]
        record(
            stream=True,
            ttft_ms=30.0,
            cached_tokens=5,
            reasoning_tokens=2,
            rails_prompt_tokens=100,
            rails_completion_tokens=1,
            rails_cost_micro_usd=32,
            guard_actions={"pii.redacted": 2, "denylist.blocked": 1},
            blocked=True,
            status=400,
            error="content_filter",
        ),
    )

    who = {"tenant": "acme", "model": "gpt-test"}
    assert value(counters, "railgate_requests_total", **who, status="200") == 1
    assert value(counters, "railgate_requests_total", **who, status="400") == 1
    tokens = {
        dict(labels)["kind"]: v
        for labels, v in series_of(counters, "railgate_tokens_total").items()
    }
    assert tokens == {
        "prompt": 22,
        "completion": 8,
        "cached": 5,
        "reasoning": 2,
        "rails_prompt": 100,
        "rails_completion": 1,
    }
    assert value(counters, "railgate_cost_usd_total", **who) == pytest.approx(168e-6)
    for name in (
        "railgate_request_duration_seconds",
        "railgate_upstream_duration_seconds",
        "railgate_gateway_overhead_seconds",
    ):
        assert value(counters, f"{name}_count", model="gpt-test") == 2
    assert value(counters, "railgate_request_duration_seconds_sum", model="gpt-test") == 0.5
    assert value(counters, "railgate_upstream_duration_seconds_sum", model="gpt-test") == 0.48
    assert value(counters, "railgate_gateway_overhead_seconds_sum", model="gpt-test") == 0.02
    ttft = {"model": "gpt-test"}
    assert value(counters, "railgate_time_to_first_token_seconds_count", **ttft) == 1
    assert value(counters, "railgate_time_to_first_token_seconds_sum", **ttft) == 0.03
    assert series_of(counters, "railgate_guard_actions_total") == {
        frozenset({("tenant", "acme"), ("action", "pii.redacted")}): 2,
        frozenset({("tenant", "acme"), ("action", "denylist.blocked")}): 1,
    }
    assert value(counters, "railgate_blocked_total", tenant="acme") == 1
    assert series_of(counters, "railgate_upstream_errors_total") == {}


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"status": 504, "error": "upstream_timeout", "upstream_ms": 1000.0}, "upstream_timeout"),
        ({"status": 502, "error": "upstream_error", "upstream_ms": 3.0}, "upstream_error"),
        ({"status": 429, "error": "upstream_status", "upstream_ms": 3.0}, "upstream_status"),
        ({"status": 500, "error": "internal_error", "upstream_ms": 3.0}, "internal_error"),
        ({"status": 503, "error": "guard_unavailable", "upstream_ms": 3.0}, None),
        ({"status": 503, "error": "limits_unavailable", "upstream_ms": None}, None),
        ({"status": 429, "error": "rate_limit_exceeded", "upstream_ms": None}, None),
        ({"status": 499, "error": "client_disconnected", "upstream_ms": 3.0}, None),
    ],
)
def test_upstream_errors_count_the_calls_the_provider_failed(
    fields: dict[str, Any], code: str | None
) -> None:
    counters = Counters()
    CallMetrics(counters).finished(None, record(**fields))  # type: ignore[arg-type]

    expected = {frozenset({("provider", "up"), ("code", code)}): 1} if code else {}
    assert series_of(counters, "railgate_upstream_errors_total") == expected


def test_exchanges_count_by_status_only() -> None:
    counters = Counters()
    metrics = CallMetrics(counters)
    for path, status, proxied in (
        ("/v1/chat/completions", 401, True),
        ("/v1/chat/completions", 401, True),
        ("/v1/embeddings", 404, True),
        ("/v1/models", 200, False),
        ("/admin/keys/secret-key-id", 403, False),
        ("/healthz", 200, False),
    ):
        metrics.exchanged(Exchange("req-x", "POST", path, status, 1.0, "10.0.0.1", proxied=proxied))

    assert series_of(counters, "railgate_requests_total") == {
        frozenset({("tenant", ""), ("model", ""), ("status", "401")}): 2,
        frozenset({("tenant", ""), ("model", ""), ("status", "404")}): 1,
    }
    assert series_of(counters, "railgate_http_requests_total") == {
        frozenset({("status", "403")}): 1,
        frozenset({("status", "200")}): 2,
    }
    text = counters.render().decode()
    assert "secret-key-id" not in text
    assert "req-x" not in text
