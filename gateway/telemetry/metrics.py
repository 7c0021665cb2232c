"""Per-call Prometheus series: an observer that feeds the registry in `gateway.metrics`.

Each finished call adds to its tenant's and model's request, token and cost counters
and to the latency histograms of its model (by model only, to keep them few). An
exchange that never became a call counts by status alone. Label values are configured
names (tenant, model, provider, guard) and outcome codes: never request ids, user ids,
keys or paths.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.metrics import Counters
from gateway.telemetry.observer import Exchange

if TYPE_CHECKING:
    from gateway.call import Call
    from gateway.ledger.records import UsageRecord

__all__ = ["CallMetrics"]

_NOT_UPSTREAM = frozenset({"guard_unavailable"})
"""Error codes of failures after an upstream answer that are the gateway's own."""


class CallMetrics:
    """Counts calls and exchanges in `counters` (a handful of dict updates each)."""

    def __init__(self, counters: Counters) -> None:
        self._counters = counters

    def finished(self, call: Call, record: UsageRecord) -> None:
        add, observe = self._counters.add, self._counters.observe
        tenant, model = record.tenant_id, record.model
        by_model = (model,)
        add("railgate_requests_total", (tenant, model, str(record.status)))
        observe("railgate_request_duration_seconds", record.latency_ms / 1000, by_model)
        observe("railgate_gateway_overhead_seconds", record.overhead_ms / 1000, by_model)
        if record.upstream_ms is not None:
            observe("railgate_upstream_duration_seconds", record.upstream_ms / 1000, by_model)
        if record.stream and record.ttft_ms is not None:
            observe("railgate_time_to_first_token_seconds", record.ttft_ms / 1000, by_model)
        for kind, tokens in (
            ("prompt", record.prompt_tokens),
            ("completion", record.completion_tokens),
            ("cached", record.cached_tokens),
            ("reasoning", record.reasoning_tokens),
            ("rails_prompt", record.rails_prompt_tokens),
            ("rails_completion", record.rails_completion_tokens),
        ):
            if tokens:
                add("railgate_tokens_total", (tenant, model, kind), tokens)
        cost = record.cost_micro_usd + record.rails_cost_micro_usd
        if cost:
            add("railgate_cost_usd_total", (tenant, model), cost / 1_000_000)
        if record.guard_actions:
            for action, count in record.guard_actions.items():
                add("railgate_guard_actions_total", (tenant, action), count)
        if record.blocked:
            add("railgate_blocked_total", (tenant,))
        if _upstream_failed(record):
            code = record.error or str(record.status)
            add("railgate_upstream_errors_total", (record.provider, code))

    def exchanged(self, exchange: Exchange) -> None:
        status = str(exchange.status)
        if exchange.proxied:
            self._counters.add("railgate_requests_total", ("", "", status))
        else:
            self._counters.add("railgate_http_requests_total", (status,))


def _upstream_failed(record: UsageRecord) -> bool:
    """The provider failed the call: an `upstream_*` error (unreachable, timed out, a 5xx
    or an unusable answer, a 4xx passed through), or a 5xx after the upstream was called
    that the gateway itself did not cause."""
    error = record.error or ""
    if error.startswith("upstream"):
        return True
    return record.upstream_ms is not None and record.status >= 500 and error not in _NOT_UPSTREAM
