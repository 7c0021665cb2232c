"""The OpenTelemetry spans of one finished call, built once after the answer was sent.

    POST /v1/chat/completions      server, the whole call          (call.trace.span_id)
    ├─ railgate.authenticate       key → tenant, body parsed, model routed
    ├─ railgate.limits             admission (one store round trip), when the call has
    │                              limits (without, admission checks nothing)
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

A span keeps its attributes in OTLP JSON form. Attributes that repeat (per tenant, key,
model, provider, status) are encoded once and cached (bounded, least recently used
evicted); only per-call values (request id, token counts) are encoded per call. That
halves the CPU per call (bench/telemetry_micro.py), which is what telemetry costs the
gateway under load.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec

from gateway.config import Settings
from gateway.limits.plan import has_limits
from gateway.telemetry.otlp import (
    AttributeKey,
    AttributeValue,
    decode_attributes,
    encode_attributes,
    key_value,
)

if TYPE_CHECKING:
    from gateway.call import Call
    from gateway.ledger.records import UsageRecord
    from gateway.telemetry.observer import Exchange

__all__ = [
    "GEN_AI_ATTRIBUTES",
    "KIND_CLIENT",
    "KIND_INTERNAL",
    "KIND_SERVER",
    "AttributeValue",
    "Span",
    "SpanFactory",
    "cached_key_value",
    "call_parameters",
    "request_parameters",
]

Parameter = int | float | tuple[str, ...]
"""A GenAI request parameter's value (stop sequences as a tuple)."""

KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 1, 2, 3
"""OTLP `Span.SpanKind` values."""

GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
ERROR_TYPE = "error.type"
TENANT_ID = "railgate.tenant_id"
_REQUEST_ID = AttributeKey("railgate.request_id")
_INPUT_TOKENS = AttributeKey(GEN_AI_USAGE_INPUT_TOKENS)
_OUTPUT_TOKENS = AttributeKey(GEN_AI_USAGE_OUTPUT_TOKENS)

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

CACHED = 4096
"""Entries per fragment cache. Cached are values that repeat per tenant, key, model,
provider or status; a cache that fills evicts its least recently used entries, so a
value that never repeats costs its encoding, never memory."""

cached_key_value = lru_cache(maxsize=CACHED, typed=True)(key_value)
"""`otlp.key_value` for an attribute whose value repeats (arrays as tuples: hashable).
`typed`: `1`, `1.0` and `True` are three different attribute values. Not for floats:
`-0.0 == 0.0`, so one would be encoded as the other."""


class Span(msgspec.Struct, gc=False):
    """One finished span of a trace (ids are lower-case hex). A struct, not a dataclass:
    ~3x cheaper to create, and untracked by the garbage collector (scalars only)."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    encoded_attributes: bytes
    """The attributes as OTLP JSON `KeyValue`s, comma-separated (`otlp.encode_attributes`),
    joined from cached fragments when the span is built: exporting a span never looks
    at them one by one."""
    error: str | None = None
    """Status ERROR with this description (an error code, never content)."""

    @property
    def attributes(self) -> dict[str, AttributeValue]:
        """The attributes as values, decoded (for the SDK's span processors and tests)."""
        return decode_attributes(self.encoded_attributes)


@dataclass(frozen=True, slots=True, eq=False)  # hashed by identity: a cheap cache key
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
        at_ns = call.at_ns
        wall = call.wall_ns
        end_ns = at_ns(call.ended if call.ended is not None else call.started)
        tenant, error, status = record.tenant_id, record.error, record.status
        before, after = _server_attributes(
            record.endpoint, status, tenant, record.key_id, record.model, error
        )
        spans = [
            Span(
                trace_id,
                server_id,
                trace.parent_span_id,
                _server_name(record.endpoint),
                KIND_SERVER,
                wall,
                end_ns,
                b"".join((before, _REQUEST_ID.string(record.request_id), after)),
                error if status >= 500 else None,
            )
        ]
        guards, admitted = call.guards, call.admitted
        timed = guards.timings_ms if guards is not None and admitted is not None else {}
        ids = iter(_span_ids(2 + len(timed)))
        tenant_attr = cached_key_value(TENANT_ID, tenant)
        if call.authed is not None:
            authed_ns = at_ns(call.authed)
            spans.append(
                Span(
                    trace_id,
                    next(ids),
                    server_id,
                    "railgate.authenticate",
                    KIND_INTERNAL,
                    wall,
                    authed_ns,
                    tenant_attr,
                )
            )
            refused = admitted is None and call.upstream_started is None
            if refused or has_limits(call):  # no limits: admission checked nothing
                spans.append(
                    Span(
                        trace_id,
                        next(ids),
                        server_id,
                        "railgate.limits",
                        KIND_INTERNAL,
                        authed_ns,
                        end_ns if admitted is None else at_ns(admitted),
                        tenant_attr + b"," + cached_key_value(ERROR_TYPE, error)
                        if refused and error
                        else tenant_attr,
                        error if refused and status >= 500 else None,
                    )
                )
        if timed and guards is not None and admitted is not None:
            start = at_ns(admitted)
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
                        _guard_attributes(tenant, name, counts.get(name, 0)),
                    )
                )
        if call.upstream_started is not None:
            spans.append(self._client_span(call, record))
        return spans

    def _client_span(self, call: Call, record: UsageRecord) -> Span:
        attrs = [
            _client_attributes(
                self._upstreams.get(record.provider),
                record.provider,
                record.endpoint,
                record.upstream_model,
                record.tenant_id,
                call.response_model,
            )
        ]
        usage = call.usage
        if usage is not None:
            attrs.append(_INPUT_TOKENS.integer(usage.prompt_tokens))
            attrs.append(_OUTPUT_TOKENS.integer(usage.completion_tokens))
        if call.finish_reasons:
            reasons = tuple(call.finish_reasons)
            attrs.append(cached_key_value(GEN_AI_RESPONSE_FINISH_REASONS, reasons))
        for name, value in call_parameters(call).items():
            if type(value) is float:  # not cached: -0.0 == 0.0
                attrs.append(key_value(name, value))
            else:
                attrs.append(cached_key_value(name, value))
        failed = (
            record.status >= 400 and record.error is not None and record.upstream_ms is not None
        )
        if failed:
            attrs.append(cached_key_value(ERROR_TYPE, record.error or "error"))
        started = call.upstream_started
        assert started is not None
        end = call.upstream_ended if call.upstream_ended is not None else call.ended
        if end is None:
            end = started
        return Span(
            call.trace.trace_id,
            call.trace.upstream_span_id,
            call.trace.span_id,
            _client_name(record.endpoint, record.upstream_model),
            KIND_CLIENT,
            call.at_ns(started),
            call.at_ns(end),
            b",".join(attrs),
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
            attrs[ERROR_TYPE] = exchange.error
        return Span(
            exchange.trace_id,
            _span_ids(1)[0],
            None,
            f"{exchange.method} {exchange.path}",
            KIND_SERVER,
            end_ns - int(exchange.duration_ms * 1e6),
            end_ns,
            encode_attributes(attrs),
            exchange.error if exchange.status >= 500 else None,
        )


@lru_cache(maxsize=CACHED)
def _server_name(endpoint: str) -> str:
    return f"POST /v1/{endpoint}"


@lru_cache(maxsize=CACHED)
def _client_name(endpoint: str, model: str) -> str:
    return f"{_OPERATIONS.get(endpoint, 'chat')} {model}"


@lru_cache(maxsize=CACHED)
def _server_attributes(
    endpoint: str, status: int, tenant: str, key: str, model: str, error: str | None
) -> tuple[bytes, bytes]:
    """The server span's attributes before its request id (with a trailing comma) and
    after it (with a leading one)."""
    path = f"/v1/{endpoint}"
    before: dict[str, AttributeValue] = {
        "http.request.method": "POST",
        "http.route": path,
        "url.path": path,
        "http.response.status_code": status,
        TENANT_ID: tenant,
        "railgate.key_id": key,
    }
    after: dict[str, AttributeValue] = {GEN_AI_REQUEST_MODEL: model}
    if error:
        after[ERROR_TYPE] = error
    return encode_attributes(before) + b",", b"," + encode_attributes(after)


@lru_cache(maxsize=CACHED)
def _guard_attributes(tenant: str, name: str, findings: int) -> bytes:
    return encode_attributes(
        {TENANT_ID: tenant, "railgate.guard.name": name, "railgate.guard.findings": findings}
    )


@lru_cache(maxsize=CACHED)
def _client_attributes(
    upstream: _Upstream | None,
    provider: str,
    endpoint: str,
    model: str,
    tenant: str,
    response_model: str | None,
) -> bytes:
    """The client span's attributes that depend on provider, models and tenant only."""
    attrs: dict[str, AttributeValue] = {
        GEN_AI_OPERATION_NAME: _OPERATIONS.get(endpoint, "chat"),
        GEN_AI_PROVIDER_NAME: upstream.provider_name if upstream else provider,
        GEN_AI_REQUEST_MODEL: model,
        TENANT_ID: tenant,
        "railgate.provider": provider,
    }
    if upstream is not None and upstream.address:
        attrs["server.address"] = upstream.address
        if upstream.port is not None:
            attrs["server.port"] = upstream.port
    if response_model:
        attrs[GEN_AI_RESPONSE_MODEL] = response_model
    return encode_attributes(attrs)


def _span_ids(count: int) -> list[str]:
    """`count` fresh span ids. Span ids need uniqueness, not secrecy: `random` (reseeded
    in every forked worker) is what the OpenTelemetry SDK uses too, without a syscall."""
    return random.getrandbits(64 * count).to_bytes(8 * count).hex(" ", 8).split()


def call_parameters(call: Call) -> dict[str, Parameter]:
    """`request_parameters` of the call's body, worked out once per call (its spans and
    its Langfuse generation both need them)."""
    found = call.parameters
    if found is None:
        found = call.parameters = request_parameters(call.request.body)
    return found


def request_parameters(body: Mapping[str, Any]) -> dict[str, Parameter]:
    """The GenAI request-parameter attributes of an OpenAI request body, in body order
    (stop sequences as a tuple)."""
    names = _REQUEST_PARAMETERS
    params: dict[str, Parameter] = {}
    for field in body:
        if field not in names:
            continue
        value = body[field]
        kind = type(value)
        if kind is int or kind is float:  # not bool
            params[names[field]] = value
        elif field == "stop":
            if kind is str:
                params[names[field]] = (value,)
            elif kind is list and all(type(v) is str for v in value):
                params[names[field]] = tuple(value)
    return params
