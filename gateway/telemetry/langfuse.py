"""Langfuse: one generation per call, in the tenant's own project or the global default.

Railgate speaks Langfuse's OpenTelemetry ingestion directly: each call becomes one
span with Langfuse's attributes (the names the `langfuse` SDK v3+ writes, checked
against the SDK in the tests) sent as OTLP/HTTP JSON to
`{host}/api/public/otel/v1/traces` with the project's keys (Basic auth), through a
`BatchExporter` per project (bounded queue, drops counted, never on the request's
path). Measured on these machines, the SDK's own path cost 200-330 µs per generation
(its span API, JSON serializer and protobuf encoder) against ~15 µs here, which
decides whether telemetry fits the gateway's budget (bench/RESULTS.md).

The generation:
- trace id = the call's OpenTelemetry trace id; span id = the upstream span's id (the
  `traceparent` the provider saw); parent = the client's span when it sent one, so a
  client that traces into the same project sees the call under its own span;
- model, model parameters, usage details (input, output, total, cached, reasoning),
  cost details in USD (input, output, total; rails model calls in metadata),
  completion start time (first byte), level ERROR with the error code on failures;
- `user.id` = end user, `session.id` from `x-railgate-session-id`, tags `railgate` and
  `tenant:<id>`, metadata tenant id, key id, request id, status (never the key);
- with `send_content: true` (default), input = what was sent upstream (after the input
  rails redacted it) and output = the provider's answer as received (before pseudonyms
  are restored for the client), each capped at `MAX_CONTENT_CHARS`. Text the model
  made up itself is not re-scanned for Langfuse. `send_content: false` sends neither.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway.config import ExportSettings, LangfuseSettings, Settings
from gateway.metrics import Counters
from gateway.pricing import price_of
from gateway.sse import data_of
from gateway.telemetry.exporter import BatchExporter
from gateway.telemetry.observer import Exchange
from gateway.telemetry.otlp import VERSION
from gateway.telemetry.spans import KIND_CLIENT, AttributeValue, Span, request_parameters

if TYPE_CHECKING:
    from gateway.call import Call
    from gateway.ledger.records import UsageRecord

__all__ = ["ATTRIBUTES", "MAX_CONTENT_CHARS", "LangfuseTraces", "langfuse_traces"]

MAX_CONTENT_CHARS = 100_000
"""Input and output are cut to this many characters (JSON text) per generation."""
OTEL_PATH = "/api/public/otel/v1/traces"


class ATTRIBUTES:
    """Langfuse's span attribute names (`langfuse.LangfuseOtelSpanAttributes`)."""

    TRACE_NAME = "langfuse.trace.name"
    TRACE_USER_ID = "user.id"
    TRACE_SESSION_ID = "session.id"
    TRACE_TAGS = "langfuse.trace.tags"
    TRACE_METADATA = "langfuse.trace.metadata"
    OBSERVATION_TYPE = "langfuse.observation.type"
    OBSERVATION_METADATA = "langfuse.observation.metadata"
    OBSERVATION_LEVEL = "langfuse.observation.level"
    OBSERVATION_STATUS_MESSAGE = "langfuse.observation.status_message"
    OBSERVATION_INPUT = "langfuse.observation.input"
    OBSERVATION_OUTPUT = "langfuse.observation.output"
    OBSERVATION_COMPLETION_START_TIME = "langfuse.observation.completion_start_time"
    OBSERVATION_MODEL = "langfuse.observation.model.name"
    OBSERVATION_MODEL_PARAMETERS = "langfuse.observation.model.parameters"
    OBSERVATION_USAGE_DETAILS = "langfuse.observation.usage_details"
    OBSERVATION_COST_DETAILS = "langfuse.observation.cost_details"
    AS_ROOT = "langfuse.internal.as_root"
    IS_APP_ROOT = "langfuse.internal.is_app_root"


A = ATTRIBUTES


@dataclass(frozen=True, slots=True)
class _Project:
    exporter: BatchExporter
    send_content: bool


class LangfuseTraces:
    """The observer: picks the call's project, builds its generation, queues it."""

    def __init__(self, default: _Project | None, tenants: Mapping[str, _Project]) -> None:
        self._default = default
        self._tenants = dict(tenants)
        unique = {id(p.exporter): p.exporter for p in [*self._tenants.values(), default] if p}
        self.exporters = list(unique.values())

    def project(self, tenant_id: str) -> _Project | None:
        return self._tenants.get(tenant_id, self._default)

    def wants_content(self, tenant_id: str) -> bool:
        project = self.project(tenant_id)
        return project is not None and project.send_content

    def finished(self, call: Call, record: UsageRecord) -> None:
        project = self.project(record.tenant_id)
        if project is not None:
            project.exporter.submit([generation(call, record, project.send_content)])

    def exchanged(self, exchange: Exchange) -> None:
        """Requests that never became a call belong to no tenant: nothing to send."""


def langfuse_traces(
    settings: Settings, counters: Counters, env: Mapping[str, str]
) -> LangfuseTraces | None:
    """One exporter per distinct project (host + public key); None when none is configured."""
    exporters: dict[tuple[str, str], BatchExporter] = {}

    def project(config: LangfuseSettings, name: str) -> _Project:
        public, secret = env[config.public_key_env], env[config.secret_key_env]
        host = config.host.rstrip("/")
        exporter = exporters.get((host, public))
        if exporter is None:
            exporter = exporters[(host, public)] = _exporter(
                name, host, public, secret, settings.telemetry.export, counters
            )
        return _Project(exporter, config.send_content)

    default = settings.telemetry.langfuse
    tenants = {
        t.id: project(t.langfuse, f"langfuse:{t.id}") for t in settings.tenants if t.langfuse
    }
    if default is None and not tenants:
        return None
    return LangfuseTraces(project(default, "langfuse") if default else None, tenants)


def _exporter(
    name: str, host: str, public: str, secret: str, export: ExportSettings, counters: Counters
) -> BatchExporter:
    auth = base64.b64encode(f"{public}:{secret}".encode()).decode("ascii")
    return BatchExporter(
        name,
        host + OTEL_PATH,
        export,
        counters,
        resource={"service.name": "railgate", "service.version": VERSION},
        headers={
            "authorization": f"Basic {auth}",
            "x-langfuse-public-key": public,
            "x-langfuse-ingestion-version": "4",
        },
    )


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _capped(value: Any) -> str:
    text = _json(value)
    return text if len(text) <= MAX_CONTENT_CHARS else text[:MAX_CONTENT_CHARS] + "…[truncated]"


def generation(call: Call, record: UsageRecord, send_content: bool) -> Span:
    input_price, output_price = price_of(call)
    prompt, completion = record.prompt_tokens, record.completion_tokens
    usage = {"input": prompt, "output": completion, "total": prompt + completion}
    if record.cached_tokens:
        usage["input_cached_tokens"] = record.cached_tokens
    if record.reasoning_tokens:
        usage["output_reasoning_tokens"] = record.reasoning_tokens
    input_usd = prompt * input_price / 1e6
    output_usd = completion * output_price / 1e6
    metadata = {
        "tenant_id": record.tenant_id,
        "key_id": record.key_id,
        "request_id": record.request_id,
        "status": record.status,
        "provider": record.provider,
    }
    if record.rails_calls:
        metadata["rails_cost_usd"] = record.rails_cost_micro_usd / 1e6
    attrs: dict[str, AttributeValue] = {
        A.OBSERVATION_TYPE: "generation",
        A.AS_ROOT: True,  # the trace's root in Langfuse, even under a client's span
        A.IS_APP_ROOT: True,
        A.OBSERVATION_MODEL: record.upstream_model,
        A.OBSERVATION_USAGE_DETAILS: _json(usage),
        A.OBSERVATION_COST_DETAILS: _json(
            {"input": input_usd, "output": output_usd, "total": input_usd + output_usd}
        ),
        A.TRACE_NAME: f"railgate {record.endpoint}",
        A.TRACE_TAGS: ["railgate", f"tenant:{record.tenant_id}"],
        f"{A.TRACE_METADATA}.tenant_id": _json(record.tenant_id),
    }
    for key, value in metadata.items():
        attrs[f"{A.OBSERVATION_METADATA}.{key}"] = _json(value)
    parameters: dict[str, AttributeValue] = {}
    request_parameters(call.request.body, parameters)
    if parameters:
        attrs[A.OBSERVATION_MODEL_PARAMETERS] = _json(
            {k.removeprefix("gen_ai.request."): v for k, v in parameters.items()}
        )
    if call.first_byte is not None:
        first = dt.datetime.fromtimestamp(call.at_ns(call.first_byte) / 1e9, dt.UTC)
        attrs[A.OBSERVATION_COMPLETION_START_TIME] = orjson.dumps(
            first, option=orjson.OPT_UTC_Z
        ).decode()
    if record.user:
        attrs[A.TRACE_USER_ID] = record.user
    if call.session_id:
        attrs[A.TRACE_SESSION_ID] = call.session_id
    if record.status >= 400:
        attrs[A.OBSERVATION_LEVEL] = "ERROR"
        attrs[A.OBSERVATION_STATUS_MESSAGE] = record.error or f"HTTP {record.status}"
    if send_content:
        sent = _input(call)
        if sent is not None:
            attrs[A.OBSERVATION_INPUT] = _capped(sent)
        answer = _output(call)
        if answer is not None:
            attrs[A.OBSERVATION_OUTPUT] = _capped(answer)
    start = call.upstream_started if call.upstream_started is not None else call.started
    end = call.upstream_ended or call.ended or start
    return Span(
        call.trace.trace_id,
        call.trace.upstream_span_id,
        call.trace.parent_span_id,
        f"{record.endpoint.split('/')[0]} {record.upstream_model}",
        KIND_CLIENT,
        call.at_ns(start),
        call.at_ns(end),
        attrs,
        record.error if record.status >= 400 else None,
    )


def _input(call: Call) -> Any:
    body = call.request.body
    for field in ("messages", "prompt", "input"):
        if field in body:
            return body[field]
    return None


def _output(call: Call) -> Any:
    """The upstream's answer as received: the message(s) or text, never embeddings."""
    if call.request.endpoint == "embeddings":
        return None
    if call.upstream_reply is not None:
        try:
            reply = orjson.loads(call.upstream_reply)
        except orjson.JSONDecodeError:
            return None
        choices = reply.get("choices") if isinstance(reply, dict) else None
        if not isinstance(choices, list):
            return None
        out = [c.get("message", c.get("text")) for c in choices if isinstance(c, dict)]
        return out[0] if len(out) == 1 else out
    if call.upstream_events:
        return _streamed(call.upstream_events, chat=call.request.endpoint == "chat/completions")
    return None


def _streamed(events: list[bytes], chat: bool) -> Any:
    """The text of choice 0 of a relayed stream (tool-call deltas are left out)."""
    parts: list[str] = []
    for event in events:
        data = data_of(event)
        if not data or data == b"[DONE]":
            continue
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
            if isinstance(piece, str):
                parts.append(piece)
    text = "".join(parts)
    return {"role": "assistant", "content": text} if chat else text
