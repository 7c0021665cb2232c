"""Usage: one `UsageRecord` per call, priced in integer micro-USD, handed to a `UsageSink`.

Prices are configured in USD per million tokens, which is exactly micro-USD per
token, so `cost_micro_usd = prompt_tokens * input_price + completion_tokens * output_price`.
Sinks must not block or fail the request: the proxy hands records over through
`tasks.spawn()` after the answer has been sent. The default sink is
`gateway.ledger.sink.LedgerSink`, which writes them to the store's usage ledger.

When the provider was called but reported no usage (the client left mid-stream, the
stream broke, the provider sends none), the record is `estimated`: prompt tokens are
the gateway's pre-call estimate (`gateway.limits.tokens`: ~4 characters a token),
completion tokens 0 (the relay does not count streamed text), and the cost is priced
from those. This applies to answered calls (status < 400) and client disconnects (499);
a call that failed (upstream error or status, timeout, a failing rail) is taken as
unbilled and stays at 0. Budgets (`spend_micro_usd`) count reported usage only.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from gateway.call import Call
from gateway.ledger.records import UsageRecord
from gateway.limits.tokens import estimate_tokens
from gateway.pricing import price_of

__all__ = ["UsageRecord", "UsageSink", "log_record", "record_for", "spend_micro_usd"]

log = logging.getLogger("railgate.usage")

DISCONNECTED = 499


class UsageSink(Protocol):
    async def record(self, record: UsageRecord) -> None:
        """Called once per finished call (success, error or disconnect), off the hot path."""


def log_record(record: UsageRecord) -> None:
    """One debug line per call with ids, tokens and cost, never content."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "usage request_id=%s tenant=%s key=%s model=%s status=%s tokens=%s/%s"
            " cost_micro_usd=%s estimated=%s rails_calls=%s rails_cost_micro_usd=%s",
            record.request_id,
            record.tenant_id,
            record.key_id,
            record.model,
            record.status,
            record.prompt_tokens,
            record.completion_tokens,
            record.cost_micro_usd,
            record.estimated,
            record.rails_calls,
            record.rails_cost_micro_usd,
        )


def _main_cost(call: Call) -> tuple[int, int, int]:
    """(prompt tokens, completion tokens, micro-USD) of the call's main model call."""
    usage = call.usage
    prompt = usage.prompt_tokens if usage else 0
    completion = usage.completion_tokens if usage else 0
    input_price, output_price = price_of(call)
    return prompt, completion, round(prompt * input_price + completion * output_price)


def spend_micro_usd(call: Call) -> int:
    """What the call cost the tenant: the main call plus its rails' model calls."""
    rails = call.guards.model_calls if call.guards is not None else []
    return _main_cost(call)[2] + sum(c.cost_micro_usd for c in rails)


def _guard_summary(call: Call) -> tuple[dict[str, int] | None, bool]:
    """(finding counts by `<guard>.<action>`, whether a rail blocked)."""
    blocked = call.error == "content_filter"
    if call.guards is None or not call.guards.findings:
        return None, blocked
    counts: dict[str, int] = {}
    for finding in call.guards.findings:
        label = f"{finding.guard}.{finding.action}"
        counts[label] = counts.get(label, 0) + 1
        blocked = blocked or finding.action == "blocked"
    return counts, blocked


def record_for(call: Call) -> UsageRecord:
    """Freeze a finished call into a priced record."""
    ended = call.ended if call.ended is not None else time.perf_counter()
    prompt, completion, cost = _main_cost(call)
    usage = call.usage
    model = call.route.model
    cached = reasoning = 0
    estimated = False
    if usage is not None:
        details = usage.prompt_tokens_details
        cached = (details.cached_tokens or 0) if details is not None else 0
        more = usage.completion_tokens_details
        reasoning = (more.reasoning_tokens or 0) if more is not None else 0
    elif call.upstream_started is not None and (call.status < 400 or call.status == DISCONNECTED):
        estimated = True
        prompt, completion = estimate_tokens(call.request, 0)[0], 0
        cost = round(prompt * price_of(call)[0])
    upstream_ms = None
    if call.upstream_started is not None and call.upstream_ended is not None:
        upstream_ms = (call.upstream_ended - call.upstream_started) * 1000
    latency_ms = (ended - call.started) * 1000
    rails = call.guards.model_calls if call.guards is not None else None
    rails_prompt = rails_completion = rails_cost = 0
    if rails:
        rails_prompt = sum(c.prompt_tokens for c in rails)
        rails_completion = sum(c.completion_tokens for c in rails)
        rails_cost = sum(c.cost_micro_usd for c in rails)
    actions, blocked = _guard_summary(call)
    return UsageRecord(
        request_id=call.request_id,
        tenant_id=call.caller.tenant.id,
        key_id=call.caller.key.id,
        model=model.name,
        provider=call.route.provider.name,
        endpoint=call.request.endpoint,
        stream=call.request.stream,
        status=call.status,
        error=call.error,
        user=call.user,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_micro_usd=cost,
        latency_ms=latency_ms,
        ttft_ms=(call.first_byte - call.started) * 1000 if call.first_byte else None,
        timestamp=time.time(),
        rails_calls=len(rails) if rails else 0,
        rails_prompt_tokens=rails_prompt,
        rails_completion_tokens=rails_completion,
        rails_cost_micro_usd=rails_cost,
        trace_id=call.trace.trace_id,
        requested_model=call.request.model,
        upstream_model=model.target,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
        estimated=estimated,
        upstream_ms=upstream_ms,
        overhead_ms=latency_ms - (upstream_ms or 0.0),
        blocked=blocked,
        guard_actions=actions,
    )
