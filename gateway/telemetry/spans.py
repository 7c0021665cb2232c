"""The OpenTelemetry spans of one finished call, built once after the answer was sent.

    POST /v1/chat/completions      server, the whole call          (call.trace.span_id)
    ├─ railgate.authenticate       key → tenant, body parsed, model routed
    ├─ railgate.limits             admission (one store round trip)
    ├─ railgate.guard <name>       each guard's time, summed over its texts and stages,
    │                              placed at the start of the input stage
    └─ chat <model>                client, the upstream call       (call.trace.upstream_span_id)

The client span carries the GenAI semantic-convention attributes (`gen_ai.*`, names
checked against `opentelemetry-semantic-conventions` in the tests) and
`railgate.tenant_id`. Prompt and answer text are never attributes. The span ids were
chosen before the upstream call (`tracecontext`), so the `traceparent` the provider
received names the client span. Spans are plain records (`Span`): building them costs a
few microseconds, against ~14 µs for each span started and ended through the SDK's
tracer; `otlp` encodes them and `sdk` hands them to SDK span processors when configured.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gateway.config import Settings

if TYPE_CHECKING:
    from gateway.call import Call
    from gateway.ledger.records import UsageRecord
    from gateway.telemetry.observer import Exchange

__all__ = [
    "GEN_AI_ATTRIBUTES",
    "KIND_CLIENT",
    "KIND_INTERNAL",
    "KIND_SERVER",
    "Span",
    "SpanFactory",
    "request_parameters",
]

AttributeValue = str | bool | int | float | list[str]

KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 1, 2, 3
"""OTLP `Span.SpanKind` values."""

GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"

_REQUEST_PARAMETERS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
    "n": "gen_ai.request.choice.count",
    "stop": "gen_ai.request.stop_sequences",
}
"""OpenAI body field → GenAI request attribute."""

GEN_AI_ATTRIBUTES: tuple[str, ...] = (
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    GEN_AI_RESPONSE_FINISH_REASONS,
    *sorted(set(_REQUEST_PARAMETERS.values())),
)
"""Every `gen_ai.*` attribute name the gateway may set (the tests check each exists)."""

_OPERATIONS = {
    "chat/completions": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
}
_PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "mock": "railgate.mock"}
"""Provider type → `gen_ai.provider.name` (well-known values where one exists)."""


@dataclass(slots=True)
class Span:
    """One finished span of a trace (ids are lower-case hex)."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, AttributeValue]
    error: str | None = None
    """Status ERROR with this description (an error code, never content)."""


@dataclass(frozen=True, slots=True)
class _Upstream:
    provider_name: str
    address: str | None
    port: int | None


class SpanFactory:
    """Builds a call's spans; per-provider facts are worked out once at start."""

    def __init__(self, settings: Settings) -> None:
        self._upstreams: dict[str, _Upstream] = {}
        for p in settings.providers:
            address = port = None
            if p.base_url:
                parts = urlsplit(p.base_url)
                address = parts.hostname
                port = parts.port or (443 if parts.scheme == "https" else 80)
            self._upstreams[p.name] = _Upstream(_PROVIDER_NAMES[p.type], address, port)

    def call_spans(self, call: Call, record: UsageRecord) -> list[Span]:
        trace = call.trace
        trace_id, server_id = trace.trace_id, trace.span_id
        ended = call.ended if call.ended is not None else call.started
        path = f"/v1/{record.endpoint}"
        server_attrs: dict[str, AttributeValue] = {
            "http.request.method": "POST",
            "http.route": path,
            "url.path": path,
            "http.response.status_code": record.status,
            "railgate.tenant_id": record.tenant_id,
            "railgate.key_id": record.key_id,
            "railgate.request_id": record.request_id,
            GEN_AI_REQUEST_MODEL: record.model,
        }
        if record.error:
            server_attrs["error.type"] = record.error
        spans = [
            Span(
                trace_id,
                server_id,
                trace.parent_span_id,
                f"POST {path}",
                KIND_SERVER,
                call.wall_ns,
                call.at_ns(ended),
                server_attrs,
                record.error if record.status >= 500 else None,
            )
        ]
        guards = call.guards
        timed = guards.timings_ms if guards is not None and call.admitted is not None else {}
        ids = iter(_span_ids(2 + len(timed)))
        tenant: dict[str, AttributeValue] = {"railgate.tenant_id": record.tenant_id}
        if call.authed is not None:
            spans.append(
                Span(
                    trace_id,
                    next(ids),
                    server_id,
                    "railgate.authenticate",
                    KIND_INTERNAL,
                    call.wall_ns,
                    call.at_ns(call.authed),
                    dict(tenant),
                )
            )
            admitted = call.admitted
            refused = admitted is None and call.upstream_started is None
            spans.append(
                Span(
                    trace_id,
                    next(ids),
                    server_id,
                    "railgate.limits",
                    KIND_INTERNAL,
                    call.at_ns(call.authed),
                    call.at_ns(admitted if admitted is not None else ended),
                    {**tenant, "error.type": record.error} if refused and record.error else tenant,
                    record.error if refused and record.status >= 500 else None,
                )
            )
        if timed and guards is not None and call.admitted is not None:
            start = call.at_ns(call.admitted)
            counts: dict[str, int] = {}
            for finding in guards.findings:
                counts[finding.guard] = counts.get(finding.guard, 0) + 1
            for name, spent_ms in timed.items():
                spans.append(
                    Span(
                        trace_id,
                        next(ids),
                        server_id,
                        f"railgate.guard {name}",
                        KIND_INTERNAL,
                        start,
                        start + int(spent_ms * 1e6),
                        {
                            **tenant,
                            "railgate.guard.name": name,
                            "railgate.guard.findings": counts.get(name, 0),
                        },
                    )
                )
        if call.upstream_started is not None:
            spans.append(self._client_span(call, record))
        return spans

    def _client_span(self, call: Call, record: UsageRecord) -> Span:
        upstream = self._upstreams.get(record.provider)
        operation = _OPERATIONS.get(record.endpoint, "chat")
        attrs: dict[str, AttributeValue] = {
            GEN_AI_OPERATION_NAME: operation,
            GEN_AI_PROVIDER_NAME: upstream.provider_name if upstream else record.provider,
            GEN_AI_REQUEST_MODEL: record.upstream_model,
            "railgate.tenant_id": record.tenant_id,
            "railgate.provider": record.provider,
        }
        if upstream is not None and upstream.address:
            attrs["server.address"] = upstream.address
            if upstream.port is not None:
                attrs["server.port"] = upstream.port
        if call.response_model:
            attrs[GEN_AI_RESPONSE_MODEL] = call.response_model
        if call.usage is not None:
            attrs[GEN_AI_USAGE_INPUT_TOKENS] = call.usage.prompt_tokens
            attrs[GEN_AI_USAGE_OUTPUT_TOKENS] = call.usage.completion_tokens
        if call.finish_reasons:
            attrs[GEN_AI_RESPONSE_FINISH_REASONS] = list(call.finish_reasons)
        request_parameters(call.request.body, attrs)
        failed = (
            record.status >= 400 and record.error is not None and record.upstream_ms is not None
        )
        if failed:
            attrs["error.type"] = record.error or "error"
        assert call.upstream_started is not None
        end = call.upstream_ended if call.upstream_ended is not None else call.ended
        return Span(
            call.trace.trace_id,
            call.trace.upstream_span_id,
            call.trace.span_id,
            f"{operation} {record.upstream_model}",
            KIND_CLIENT,
            call.at_ns(call.upstream_started),
            call.at_ns(end if end is not None else call.upstream_started),
            attrs,
            record.error if failed else None,
        )

    @staticmethod
    def exchange_span(exchange: Exchange, end_ns: int) -> Span | None:
        """The server span of a proxy request refused before it became a call."""
        if exchange.trace_id is None:
            return None
        attrs: dict[str, AttributeValue] = {
            "http.request.method": exchange.method,
            "http.route": exchange.path,
            "url.path": exchange.path,
            "http.response.status_code": exchange.status,
            "railgate.request_id": exchange.request_id,
        }
        if exchange.error:
            attrs["error.type"] = exchange.error
        return Span(
            exchange.trace_id,
            _span_ids(1)[0],
            None,
            f"{exchange.method} {exchange.path}",
            KIND_SERVER,
            end_ns - int(exchange.duration_ms * 1e6),
            end_ns,
            attrs,
            exchange.error if exchange.status >= 500 else None,
        )


def _span_ids(count: int) -> list[str]:
    """`count` fresh span ids. Span ids need uniqueness, not secrecy: `random` (reseeded
    in every forked worker) is what the OpenTelemetry SDK uses too, without a syscall."""
    raw = f"{random.getrandbits(64 * count):0{16 * count}x}"
    return [raw[i : i + 16] for i in range(0, 16 * count, 16)]


def request_parameters(body: Mapping[str, Any], attrs: dict[str, AttributeValue]) -> None:
    """Add the GenAI request-parameter attributes of an OpenAI request body to `attrs`."""
    for field, value in body.items():
        name = _REQUEST_PARAMETERS.get(field)
        if name is None or value is None or isinstance(value, bool):
            continue
        if field == "stop":
            if isinstance(value, str):
                attrs[name] = [value]
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                attrs[name] = value
        elif isinstance(value, int | float):
            attrs[name] = value
