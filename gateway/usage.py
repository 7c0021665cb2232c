"""Usage: one `UsageRecord` per call, priced in integer micro-USD, handed to a `UsageSink`.

Prices are configured in USD per million tokens, which is exactly micro-USD per
token, so `cost_micro_usd = prompt_tokens * input_price + completion_tokens * output_price`.
Sinks must not block or fail the request: the proxy hands records over through
`tasks.spawn()` after the answer has been sent.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

from gateway.call import Call

__all__ = ["LogSink", "UsageRecord", "UsageSink", "record_for", "spend_micro_usd"]

log = logging.getLogger("railgate.usage")


@dataclass(frozen=True, slots=True)
class UsageRecord:
    request_id: str
    tenant_id: str
    key_id: str
    model: str
    provider: str
    endpoint: str
    stream: bool
    status: int
    error: str | None
    user: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_micro_usd: int
    latency_ms: float
    ttft_ms: float | None
    timestamp: float
    rails_calls: int = 0
    """Model calls the rails made for this request (e.g. NeMo self-checks)."""
    rails_prompt_tokens: int = 0
    rails_completion_tokens: int = 0
    rails_cost_micro_usd: int = 0
    """Cost of those calls, apart from `cost_micro_usd` (the main call)."""


class UsageSink(Protocol):
    async def record(self, record: UsageRecord) -> None:
        """Called once per finished call (success, error or disconnect), off the hot path."""


class LogSink:
    """Default sink: one debug line per call with ids, tokens and cost, never content."""

    async def record(self, record: UsageRecord) -> None:
        log.debug(
            "usage request_id=%s tenant=%s key=%s model=%s status=%s tokens=%s/%s cost_micro_usd=%s"
            " rails_calls=%s rails_cost_micro_usd=%s",
            record.request_id,
            record.tenant_id,
            record.key_id,
            record.model,
            record.status,
            record.prompt_tokens,
            record.completion_tokens,
            record.cost_micro_usd,
            record.rails_calls,
            record.rails_cost_micro_usd,
        )


def _main_cost(call: Call) -> tuple[int, int, int]:
    """(prompt tokens, completion tokens, micro-USD) of the call's main model call."""
    usage = call.usage
    prompt = usage.prompt_tokens if usage else 0
    completion = usage.completion_tokens if usage else 0
    model = call.route.model
    cost = round(prompt * model.input_price_per_mtok + completion * model.output_price_per_mtok)
    return prompt, completion, cost


def spend_micro_usd(call: Call) -> int:
    """What the call cost the tenant: the main call plus its rails' model calls."""
    rails = call.guards.model_calls if call.guards is not None else []
    return _main_cost(call)[2] + sum(c.cost_micro_usd for c in rails)


def record_for(call: Call) -> UsageRecord:
    """Freeze a finished call into a priced record."""
    now = time.perf_counter()
    prompt, completion, cost = _main_cost(call)
    model = call.route.model
    rails = call.guards.model_calls if call.guards is not None else []
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
        latency_ms=(now - call.started) * 1000,
        ttft_ms=(call.first_byte - call.started) * 1000 if call.first_byte else None,
        timestamp=time.time(),
        rails_calls=len(rails),
        rails_prompt_tokens=sum(c.prompt_tokens for c in rails),
        rails_completion_tokens=sum(c.completion_tokens for c in rails),
        rails_cost_micro_usd=sum(c.cost_micro_usd for c in rails),
    )
