"""Langfuse: one generation per call, in the tenant's own project or the global default.

Railgate speaks Langfuse's OpenTelemetry ingestion directly: each call becomes one
span with Langfuse's attributes (the names the `langfuse` SDK v3+ writes, checked
against the SDK in the tests) sent as OTLP/HTTP JSON to
`{host}/api/public/otel/v1/traces` with the project's keys (Basic auth), through a
`BatchExporter` per project (bounded queue, drops counted, never on the request's
path). Measured on these machines, the SDK's own path cost 200-330 µs per generation
(its span API, JSON serializer and protobuf encoder) against ~20 µs here with content,
queueing included, which decides whether telemetry fits the gateway's budget
(bench/RESULTS.md, bench/telemetry_micro.py). Attributes that repeat per model,
tenant, key or status are encoded once and cached (`gateway.telemetry.spans`).

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
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson

from gateway.config import ExportSettings, LangfuseSettings, Settings
from gateway.metrics import Counters
from gateway.pricing import price_of
from gateway.sse import data_of
from gateway.store.base import Tenant
from gateway.telemetry.exporter import BatchExporter
from gateway.telemetry.observer import Exchange
from gateway.telemetry.otlp import (
    VERSION,
    AttributeKey,
    encode_attributes,
    json_attribute,
    key_value,
)
from gateway.telemetry.spans import (
    CACHED,
    GEN_AI_ATTRIBUTES,
    KIND_CLIENT,
    Span,
    cached_key_value,
    call_parameters,
)

if TYPE_CHECKING:
    from gateway.call import Call
    from gateway.ledger.records import UsageRecord

log = logging.getLogger("railgate.telemetry")

__all__ = [
    "ATTRIBUTES",
    "MAX_CONTENT_CHARS",
    "LangfuseTraces",
    "generation",
    "langfuse_traces",
]

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
_USAGE = AttributeKey(A.OBSERVATION_USAGE_DETAILS)
_COST = AttributeKey(A.OBSERVATION_COST_DETAILS)
_REQUEST_ID = AttributeKey(f"{A.OBSERVATION_METADATA}.request_id")
_RAILS_COST = AttributeKey(f"{A.OBSERVATION_METADATA}.rails_cost_usd")
_PARAMETERS = AttributeKey(A.OBSERVATION_MODEL_PARAMETERS)
_COMPLETION_START = AttributeKey(A.OBSERVATION_COMPLETION_START_TIME)
_SHORT_NAMES = {
    name: name.removeprefix("gen_ai.request.")
    for name in GEN_AI_ATTRIBUTES
    if name.startswith("gen_ai.request.")
}
"""GenAI request-parameter attribute → Langfuse model-parameter name."""
_dumps = orjson.dumps
_SESSION_ID = AttributeKey(A.TRACE_SESSION_ID)
_INPUT = AttributeKey(A.OBSERVATION_INPUT)
_OUTPUT = AttributeKey(A.OBSERVATION_OUTPUT)


@dataclass(frozen=True, slots=True)
class _Project:
    exporter: BatchExporter
    send_content: bool


class LangfuseTraces:
    """The observer: picks the call's project, builds its generation, queues it.

    A tenant's own `langfuse` block (from the config file or set through the admin API)
    names its project, else the global default; one exporter per distinct project
    (host + public key), made the first time a call needs it. Keys come from the
    environment variables the block names; a project whose variables are unset gets
    nothing (logged once)."""

    def __init__(
        self,
        default: LangfuseSettings | None,
        export: ExportSettings,
        counters: Counters,
        env: Mapping[str, str],
    ) -> None:
        self._default = default
        self._export = export
        self._counters = counters
        self._env = env
        self._projects: dict[LangfuseSettings, _Project | None] = {}
        self._exporters: dict[tuple[str, str], BatchExporter] = {}
        self._started = False

    def project(self, tenant: Tenant) -> _Project | None:
        config = tenant.langfuse or self._default
        if config is None:
            return None
        found = self._projects.get(config, _MISSING)
        if found is _MISSING:
            found = self._projects[config] = self._open(config, tenant)
        return found  # type: ignore[return-value]

    def _open(self, config: LangfuseSettings, tenant: Tenant) -> _Project | None:
        public, secret = self._env.get(config.public_key_env), self._env.get(config.secret_key_env)
        if not public or not secret:
            log.error(
                "langfuse project of tenant %s: %s or %s is not set; nothing is sent",
                tenant.id,
                config.public_key_env,
                config.secret_key_env,
            )
            return None
        host = config.host.rstrip("/")
        exporter = self._exporters.get((host, public))
        if exporter is None:
            name = "langfuse" if config == self._default else f"langfuse:{tenant.id}"
            exporter = _exporter(name, host, public, secret, self._export, self._counters)
            self._exporters[(host, public)] = exporter
            if self._started:
                exporter.start()
        return _Project(exporter, config.send_content)

    @property
    def exporters(self) -> list[BatchExporter]:
        """The projects' exporters opened so far (one per distinct project)."""
        return list(self._exporters.values())

    def wants_content(self, tenant: Tenant) -> bool:
        project = self.project(tenant)
        return project is not None and project.send_content

    def finished(self, call: Call, record: UsageRecord) -> None:
        project = self.project(call.caller.tenant)
        if project is not None:
            project.exporter.submit([generation(call, record, project.send_content)])

    def exchanged(self, exchange: Exchange) -> None:
        """Requests that never became a call belong to no tenant: nothing to send."""

    def start(self) -> None:
        self._started = True
        for exporter in self._exporters.values():
            exporter.start()

    async def close(self) -> None:
        for exporter in self._exporters.values():
            await exporter.close()


_MISSING = object()


def langfuse_traces(
    settings: Settings, counters: Counters, env: Mapping[str, str]
) -> LangfuseTraces:
    return LangfuseTraces(settings.telemetry.langfuse, settings.telemetry.export, counters, env)


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


def _content(key: AttributeKey, value: Any) -> bytes:
    """`value` as JSON text, cut to `MAX_CONTENT_CHARS` characters."""
    text = orjson.dumps(value)
    if len(text) <= MAX_CONTENT_CHARS:  # bytes, never fewer than characters
        return key.json_text(text)
    chars = text.decode()
    if len(chars) > MAX_CONTENT_CHARS:
        chars = chars[:MAX_CONTENT_CHARS] + "…[truncated]"
    return key.string(chars)


def generation(call: Call, record: UsageRecord, send_content: bool) -> Span:
    """The call's Langfuse generation. Attributes that repeat per model, tenant, key or
    status come encoded from caches; the per-call ones are encoded here."""
    input_price, output_price = price_of(call)
    input_usd = record.prompt_tokens * input_price / 1e6
    output_usd = record.completion_tokens * output_price / 1e6
    model, trace, outcome = _fixed_attributes(
        record.upstream_model,
        record.endpoint,
        record.tenant_id,
        record.key_id,
        record.status,
        record.provider,
    )
    attrs = [
        model,
        _usage_details(record),
        _COST.json_escaped(
            b'{\\"input\\":%b,\\"output\\":%b,\\"total\\":%b}'
            % (_dumps(input_usd), _dumps(output_usd), _dumps(input_usd + output_usd))
        ),
        trace,
        _REQUEST_ID.json(record.request_id),
        outcome,
    ]
    if record.rails_calls:
        rails_usd = record.rails_cost_micro_usd / 1e6
        attrs.append(_RAILS_COST.json(rails_usd))
    parameters = call_parameters(call)
    if parameters:
        attrs.append(_PARAMETERS.json({_SHORT_NAMES[k]: v for k, v in parameters.items()}))
    if call.first_byte is not None:
        attrs.append(_COMPLETION_START.json_escaped(_iso_time(call.at_ns(call.first_byte))))
    if record.user:
        attrs.append(cached_key_value(A.TRACE_USER_ID, record.user))
    if call.session_id:
        attrs.append(_SESSION_ID.string(call.session_id))
    if record.status >= 400:
        attrs.append(_error_attributes(record.status, record.error))
    if send_content:
        sent = _input(call)
        if sent is not None:
            attrs.append(_content(_INPUT, sent))
        answer = _output(call)
        if answer is not None:
            attrs.append(_content(_OUTPUT, answer))
    start = call.upstream_started if call.upstream_started is not None else call.started
    end = call.upstream_ended or call.ended or start
    return Span(
        call.trace.trace_id,
        call.trace.upstream_span_id,
        call.trace.parent_span_id,
        _generation_name(record.endpoint, record.upstream_model),
        KIND_CLIENT,
        call.at_ns(start),
        call.at_ns(end),
        b",".join(attrs),
        record.error if record.status >= 400 else None,
    )


def _usage_details(record: UsageRecord) -> bytes:
    """`{"input": …, "output": …, "total": …}` (+ cached and reasoning tokens when there
    were any) as the usage-details attribute, written straight from the counts."""
    prompt, completion = record.prompt_tokens, record.completion_tokens
    text = b'{\\"input\\":%d,\\"output\\":%d,\\"total\\":%d' % (
        prompt,
        completion,
        prompt + completion,
    )
    if record.cached_tokens:
        text += b',\\"input_cached_tokens\\":%d' % record.cached_tokens
    if record.reasoning_tokens:
        text += b',\\"output_reasoning_tokens\\":%d' % record.reasoning_tokens
    return _USAGE.json_escaped(text + b"}")


def _iso_time(ns: int) -> bytes:
    """Unix time in ns as a JSON string of ISO 8601 UTC with microseconds, escaped as the
    inside of a JSON string: `\\"2026-12-05T00:18:36.123456Z\\"`."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return b'\\"%b.%06dZ\\"' % (_iso_second(seconds), rest // 1000)


@lru_cache(maxsize=4)
def _iso_second(seconds: int) -> bytes:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode()


@lru_cache(maxsize=CACHED)
def _generation_name(endpoint: str, model: str) -> str:
    return f"{endpoint.split('/')[0]} {model}"


@lru_cache(maxsize=CACHED)
def _fixed_attributes(
    model: str, endpoint: str, tenant: str, key: str, status: int, provider: str
) -> tuple[bytes, bytes, bytes]:
    """The generation's attributes that repeat per model, tenant, key and status: three
    runs, which the per-call usage, cost and request id separate in the exported order."""
    meta = A.OBSERVATION_METADATA
    by_model = encode_attributes(
        {
            A.OBSERVATION_TYPE: "generation",
            A.AS_ROOT: True,  # the trace's root in Langfuse, even under a client's span
            A.IS_APP_ROOT: True,
            A.OBSERVATION_MODEL: model,
        }
    )
    by_tenant = b",".join(
        [
            key_value(A.TRACE_NAME, f"railgate {endpoint}"),
            key_value(A.TRACE_TAGS, ["railgate", f"tenant:{tenant}"]),
            json_attribute(f"{A.TRACE_METADATA}.tenant_id", tenant),
            json_attribute(f"{meta}.tenant_id", tenant),
            json_attribute(f"{meta}.key_id", key),
        ]
    )
    by_outcome = b",".join(
        [json_attribute(f"{meta}.status", status), json_attribute(f"{meta}.provider", provider)]
    )
    return by_model, by_tenant, by_outcome


@lru_cache(maxsize=CACHED)
def _error_attributes(status: int, error: str | None) -> bytes:
    return encode_attributes(
        {
            A.OBSERVATION_LEVEL: "ERROR",
            A.OBSERVATION_STATUS_MESSAGE: error or f"HTTP {status}",
        }
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
        if len(choices) == 1 and isinstance(choices[0], dict):  # the usual answer
            return choices[0].get("message", choices[0].get("text"))
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
