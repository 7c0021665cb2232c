"""The access log: one line per request on the `railgate.access` logger.

A proxied call's line carries its ids (request, trace, server span, tenant, key), the
client address, route, model, outcome, tokens, cost and timings; an exchange that never
became a call carries what is known of it. Never the end user (the id can be an e-mail
address), never content, never a key. Building the line costs one dict and one
`logger.info`; `gateway.telemetry.logs` formats and writes it on its own thread.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from gateway.telemetry.observer import Exchange

if TYPE_CHECKING:
    from gateway.call import Call
    from gateway.ledger.records import UsageRecord

__all__ = ["AccessLog"]

log = logging.getLogger("railgate.access")


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


class AccessLog:
    """A `CallObserver` that writes the access log (at INFO)."""

    def finished(self, call: Call, record: UsageRecord) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        fields: dict[str, Any] = {
            "request_id": record.request_id,
            "trace_id": record.trace_id,
            "span_id": call.trace.span_id,
            "tenant_id": record.tenant_id,
            "key_id": record.key_id,
            "client_ip": call.client_ip,
            "method": "POST",
            "path": "/v1/" + record.endpoint,
            "model": record.model,
            "provider": record.provider,
            "stream": record.stream,
            "status": record.status,
            "error": record.error,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "cached_tokens": record.cached_tokens,
            "reasoning_tokens": record.reasoning_tokens,
            "cost_usd": (record.cost_micro_usd + record.rails_cost_micro_usd) / 1e6,
            "estimated": record.estimated,
            "duration_ms": round(record.latency_ms, 2),
            "upstream_ms": _ms(record.upstream_ms),
            "ttft_ms": _ms(record.ttft_ms),
            "overhead_ms": round(record.overhead_ms, 2),
            "blocked": record.blocked,
        }
        if record.guard_actions:
            fields["guard_actions"] = dict(record.guard_actions)  # a copy: written later
        log.info("access", extra={"fields": fields})

    def exchanged(self, exchange: Exchange) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        fields = {
            "request_id": exchange.request_id,
            "trace_id": exchange.trace_id,
            "client_ip": exchange.client_ip,
            "method": exchange.method,
            "path": exchange.path,
            "status": exchange.status,
            "error": exchange.error,
            "duration_ms": round(exchange.duration_ms, 2),
        }
        log.info("access", extra={"fields": fields})
