"""Traces through a real gateway: OpenTelemetry spans (in-memory SDK exporter and a local
OTLP receiver), Langfuse generations (a local receiver standing in for Langfuse), their
shared trace id, the `traceparent` the upstream saw, the ledger record they must agree
with, a dead or silent Langfuse, and no PII in any of it."""

from __future__ import annotations

import base64
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.app import asgi_app, create_app
from gateway.config import parse_settings
from gateway.keys import hash_key
from gateway.telemetry.langfuse import OTEL_PATH
from gateway.telemetry.spans import GEN_AI_ATTRIBUTES
from rails.pii.corpus import pii_corpus
from tests.conftest import UPSTREAM_KEY, UPSTREAM_KEY_ENV, CollectingSink, gateway_config
from tests.fakes import FakeUpstream
from tests.servers import ServerThread, free_port, wait_until
from tests.telemetry_receiver import Receiver, attributes

KEY = "rg-telemetry-" + "d" * 40
KEY_OWN = "rg-telemetry-own-" + "e" * 40
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
LF_ENV = {"LF_PUBLIC": "pk-lf-default", "LF_SECRET": "sk-lf-default"}
OWN_ENV = {"LF_OWN_PUBLIC": "pk-lf-own", "LF_OWN_SECRET": "sk-lf-own"}
PII_POLICY = {"input": [{"pii": {"action": "redact"}}]}


@dataclass
class Traced:
    url: str
    memory: InMemorySpanExporter
    otlp: Receiver
    langfuse: Receiver
    sink: CollectingSink

    def spans(self, trace_id: str) -> list[ReadableSpan]:
        return [
            s for s in self.memory.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id
        ]


def _config(upstream: FakeUpstream, langfuse_url: str, **telemetry: Any) -> dict[str, Any]:
    tenants = [
        {
            "id": "tele",
            "keys": [{"name": "k", "key_sha256": hash_key(KEY)}],
            "policy": PII_POLICY,
            "limits": {"rpm": 100_000},
        },
        {
            "id": "own",
            "keys": [{"key_sha256": hash_key(KEY_OWN)}],
            "langfuse": {
                "host": langfuse_url,
                "public_key_env": "LF_OWN_PUBLIC",
                "secret_key_env": "LF_OWN_SECRET",
                "send_content": False,
            },
        },
    ]
    raw = gateway_config(upstream.url, tenants=tenants)  # type: ignore[attr-defined]
    raw["telemetry"] = {
        "langfuse": {
            "host": langfuse_url,
            "public_key_env": "LF_PUBLIC",
            "secret_key_env": "LF_SECRET",
        },
        "export": {"interval_ms": 20, "timeout_ms": 2000},
        **telemetry,
    }
    return raw


@contextmanager
def traced(
    upstream: FakeUpstream, langfuse_url: str | None = None, **telemetry: Any
) -> Iterator[Traced]:
    otlp, langfuse = Receiver(), Receiver()
    with ServerThread(otlp) as otlp_server, ServerThread(langfuse) as lf_server:
        env = {
            UPSTREAM_KEY_ENV: UPSTREAM_KEY,
            **LF_ENV,
            **OWN_ENV,
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_server.url,
            "OTEL_SERVICE_NAME": "railgate-test",
        }
        raw = _config(upstream, langfuse_url or lf_server.url, **telemetry)
        memory = InMemorySpanExporter()
        sink = CollectingSink()
        app = create_app(
            parse_settings(raw, env),
            sink=sink,
            env=env,
            span_processors=[SimpleSpanProcessor(memory)],
        )
        with ServerThread(asgi_app(app)) as gw:
            yield Traced(gw.url, memory, otlp, langfuse, sink)


def _wait(check: Any, seconds: float = 5.0) -> None:
    assert wait_until(check, time.monotonic() + seconds, every=0.02), "timed out waiting"


def _by_trace(spans: list[dict[str, Any]], trace_id: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["traceId"] == trace_id]


def _semconv_names() -> set[str]:
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes

    return {v for k, v in vars(gen_ai_attributes).items() if k.isupper() and isinstance(v, str)}


def test_gen_ai_attribute_names_exist_in_the_semantic_conventions() -> None:
    known = _semconv_names()
    assert set(GEN_AI_ATTRIBUTES) <= known, set(GEN_AI_ATTRIBUTES) - known


def test_spans_langfuse_and_ledger_agree_on_one_call(upstream: FakeUpstream) -> None:
    upstream.reset()
    with traced(upstream) as t:
        client = openai.OpenAI(base_url=t.url + "/v1", api_key=KEY, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "hello there"}],
            user="end-user-7",
            temperature=0.3,
            max_tokens=50,
            extra_headers={
                "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
                "x-railgate-session-id": "session-42",
            },
        )
        request_id = raw.headers["x-request-id"]
        record = t.sink.wait_for(request_id)
        _wait(lambda: len(t.spans(CLIENT_TRACE)) == 5)
        _wait(lambda: _by_trace(t.langfuse.spans(OTEL_PATH), CLIENT_TRACE))
        _wait(lambda: len(_by_trace(t.otlp.spans("/v1/traces"), CLIENT_TRACE)) == 5)

    sent_parent = upstream.last().headers["traceparent"]
    assert sent_parent.split("-")[1] == CLIENT_TRACE == record.trace_id

    spans = {s.name: s for s in t.spans(CLIENT_TRACE)}
    assert set(spans) == {
        "POST /v1/chat/completions",
        "railgate.authenticate",
        "railgate.limits",
        "railgate.guard pii",
        "chat upstream-gpt",
    }
    server, chat = spans["POST /v1/chat/completions"], spans["chat upstream-gpt"]
    assert server.kind == SpanKind.SERVER and chat.kind == SpanKind.CLIENT
    assert server.parent is not None and f"{server.parent.span_id:016x}" == CLIENT_SPAN
    for name in (
        "railgate.authenticate",
        "railgate.limits",
        "railgate.guard pii",
        "chat upstream-gpt",
    ):
        parent = spans[name].parent
        assert parent is not None and parent.span_id == server.context.span_id
    # The provider saw the client span as its parent.
    assert sent_parent.split("-")[2] == f"{chat.context.span_id:016x}"
    a = dict(chat.attributes or {})
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "upstream-gpt" == a["gen_ai.response.model"]
    assert a["gen_ai.usage.input_tokens"] == record.prompt_tokens > 0
    assert a["gen_ai.usage.output_tokens"] == record.completion_tokens > 0
    assert tuple(a["gen_ai.response.finish_reasons"]) == ("stop",)
    assert a["gen_ai.request.temperature"] == 0.3 and a["gen_ai.request.max_tokens"] == 50
    assert a["railgate.tenant_id"] == "tele"
    assert {k for k in a if k.startswith("gen_ai.")} <= _semconv_names()
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 200
    # Times nest: the client span lies inside the server span.
    assert server.start_time <= chat.start_time <= chat.end_time <= server.end_time  # type: ignore[operator]
    assert server.resource.attributes["service.name"] == "railgate-test"
    guard = spans["railgate.guard pii"]
    assert guard.attributes is not None and guard.attributes["railgate.guard.name"] == "pii"
    assert guard.start_time >= spans["railgate.limits"].end_time  # type: ignore[operator]

    # The OTLP receiver got the same spans, JSON-encoded.
    exported = {s["name"]: s for s in _by_trace(t.otlp.spans("/v1/traces"), CLIENT_TRACE)}
    assert exported["chat upstream-gpt"]["spanId"] == f"{chat.context.span_id:016x}"
    assert attributes(exported["chat upstream-gpt"]) == {
        k: list(v) if isinstance(v, tuple) else v for k, v in a.items()
    }

    # Langfuse: one generation in the default project, the same trace, the record's numbers.
    (export,) = [e for e in t.langfuse.exports if e.path == OTEL_PATH]
    assert (
        export.headers["authorization"]
        == "Basic " + base64.b64encode(b"pk-lf-default:sk-lf-default").decode()
    )
    assert export.headers["x-langfuse-ingestion-version"] == "4"
    (generation,) = _by_trace(t.langfuse.spans(OTEL_PATH), CLIENT_TRACE)
    g = attributes(generation)
    assert generation["spanId"] == f"{chat.context.span_id:016x}"
    assert generation["parentSpanId"] == CLIENT_SPAN
    assert g["langfuse.observation.type"] == "generation"
    assert g["langfuse.observation.model.name"] == "upstream-gpt"
    assert g["user.id"] == "end-user-7" == record.user
    assert g["session.id"] == "session-42"
    assert orjson.loads(g["langfuse.observation.metadata.tenant_id"]) == "tele"
    assert orjson.loads(g["langfuse.observation.metadata.key_id"]) == record.key_id
    usage = orjson.loads(g["langfuse.observation.usage_details"])
    assert (usage["input"], usage["output"]) == (record.prompt_tokens, record.completion_tokens)
    cost = orjson.loads(g["langfuse.observation.cost_details"])
    assert round(cost["total"] * 1e6) == record.cost_micro_usd
    assert orjson.loads(g["langfuse.observation.model.parameters"]) == {
        "temperature": 0.3,
        "max_tokens": 50,
    }
    assert orjson.loads(g["langfuse.observation.input"]) == [
        {"role": "user", "content": "hello there"}
    ]
    assert orjson.loads(g["langfuse.observation.output"])["content"] == "fake answer"


def test_stream_tenant_project_and_content_switch(upstream: FakeUpstream) -> None:
    with traced(upstream) as t:
        client = openai.OpenAI(base_url=t.url + "/v1", api_key=KEY, max_retries=0)
        stream = client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=[{"role": "user", "content": "count"}], stream=True
        )
        streamed_id = stream.headers["x-request-id"]
        text = "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
        own = openai.OpenAI(base_url=t.url + "/v1", api_key=KEY_OWN, max_retries=0)
        own_id = own.chat.completions.with_raw_response.create(
            model="gpt-test", messages=[{"role": "user", "content": "secret plans"}]
        ).headers["x-request-id"]
        streamed, owned = t.sink.wait_for(streamed_id), t.sink.wait_for(own_id)
        _wait(lambda: len(t.langfuse.spans(OTEL_PATH)) == 2)
        _wait(lambda: len(t.spans(owned.trace_id)) == 3)

    # A tenant without limits: admission checked nothing, so there is no limits span.
    assert {s.name for s in t.spans(owned.trace_id)} == {
        "POST /v1/chat/completions",
        "railgate.authenticate",
        "chat upstream-gpt",
    }

    by_trace = {s["traceId"]: attributes(s) for s in t.langfuse.spans(OTEL_PATH)}
    s = by_trace[streamed.trace_id]
    assert orjson.loads(s["langfuse.observation.output"]) == {"role": "assistant", "content": text}
    usage = orjson.loads(s["langfuse.observation.usage_details"])
    assert usage["output"] == streamed.completion_tokens > 0
    assert "langfuse.observation.completion_start_time" in s
    # The tenant with its own project: its keys, and no content (send_content: false).
    own_exports = [
        e for e in t.langfuse.exports if e.headers["x-langfuse-public-key"] == "pk-lf-own"
    ]
    assert len(own_exports) == 1
    o = by_trace[owned.trace_id]
    assert "langfuse.observation.input" not in o and "langfuse.observation.output" not in o
    assert b"secret plans" not in own_exports[0].body
    assert orjson.loads(o["langfuse.observation.metadata.tenant_id"]) == "own"


def test_shutdown_sends_the_last_calls_spans(upstream: FakeUpstream) -> None:
    # Nothing is exported before shutdown (60 s interval): the spans wait in the exporters'
    # queues, and a graceful stop must deliver them all.
    with traced(upstream, export={"interval_ms": 60_000, "timeout_ms": 2000}) as t:
        client = openai.OpenAI(base_url=t.url + "/v1", api_key=KEY, max_retries=0)
        ids = [
            client.chat.completions.with_raw_response.create(
                model="gpt-test", messages=[{"role": "user", "content": f"question {n}"}]
            ).headers["x-request-id"]
            for n in range(3)
        ]
        traces = {t.sink.wait_for(request_id).trace_id for request_id in ids}
        assert t.otlp.spans("/v1/traces") == []
    assert {s["traceId"] for s in t.otlp.spans("/v1/traces")} == traces
    assert {s["traceId"] for s in t.langfuse.spans(OTEL_PATH)} == traces


def test_unsampled_parent_gets_no_spans_and_refusals_get_a_server_span(
    upstream: FakeUpstream,
) -> None:
    unsampled = uuid.uuid4().hex
    with traced(upstream) as t:
        with httpx.Client(timeout=10) as http:
            ok = http.post(
                t.url + "/v1/chat/completions",
                json={"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]},
                headers={
                    "authorization": f"Bearer {KEY}",
                    "traceparent": f"00-{unsampled}-{CLIENT_SPAN}-00",
                },
            )
            bad = http.post(
                t.url + "/v1/chat/completions",
                json={"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]},
                headers={"authorization": "Bearer rg-wrong"},
            )
        assert ok.status_code == 200 and bad.status_code == 401
        t.sink.wait_for(ok.headers["x-request-id"])
        _wait(
            lambda: any(
                s.name == "POST /v1/chat/completions" for s in t.memory.get_finished_spans()
            )
        )
        time.sleep(0.1)
    assert t.spans(unsampled) == []
    assert upstream.last().headers["traceparent"].endswith("-00")
    (refused,) = t.memory.get_finished_spans()
    assert refused.attributes is not None
    assert refused.attributes["http.response.status_code"] == 401
    assert refused.attributes["error.type"] == "invalid_api_key"


@contextmanager
def silent_listener() -> Iterator[str]:
    """A TCP port that accepts connections and never answers (a hung Langfuse)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        sock.close()


@contextmanager
def closed_port() -> Iterator[str]:
    """A port nothing listens on (connections are refused at once)."""
    yield f"http://127.0.0.1:{free_port()}"


def _dropped(url: str, exporter: str) -> float:
    text = httpx.get(url + "/metrics").text
    prefix = f'railgate_telemetry_dropped_total{{exporter="{exporter}"}} '
    lines = [ln for ln in text.splitlines() if ln.startswith(prefix)]
    return float(lines[0].split()[1]) if lines else 0.0


@pytest.mark.parametrize("kind", ["closed", "silent"])
def test_a_dead_langfuse_costs_requests_nothing_and_drops_are_counted(
    upstream: FakeUpstream, kind: str
) -> None:
    calls = 30
    with (
        closed_port() if kind == "closed" else silent_listener() as dead,
        traced(upstream, langfuse_url=dead, export={"interval_ms": 20, "timeout_ms": 300}) as t,
    ):
        slowest = 0.0
        with httpx.Client(timeout=10) as http:
            for _ in range(calls):
                began = time.perf_counter()
                resp = http.post(
                    t.url + "/v1/chat/completions",
                    json={"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]},
                    headers={"authorization": f"Bearer {KEY}"},
                )
                slowest = max(slowest, time.perf_counter() - began)
                assert resp.status_code == 200
        # A request never waits for the export (whose timeout is 300 ms).
        assert slowest < 0.25, f"slowest call {slowest * 1000:.0f} ms"
        _wait(lambda: _dropped(t.url, "langfuse") == calls, seconds=10)
        assert _dropped(t.url, "otlp") == 0


def test_no_pii_in_spans_or_langfuse(upstream: FakeUpstream) -> None:
    samples = pii_corpus(n=60, seed=11)
    values = {s.text[a:b] for s in samples for _, a, b in s.labels}
    upstream.reset()
    with traced(upstream) as t:
        client = openai.OpenAI(base_url=t.url + "/v1", api_key=KEY, max_retries=0)
        ids = []
        for i, sample in enumerate(samples):
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-test",
                messages=[{"role": "user", "content": sample.text}],
                stream=i % 2 == 1,
            )
            if i % 2:
                list(raw.parse())
            ids.append(raw.headers["x-request-id"])
        for request_id in ids:
            t.sink.wait_for(request_id)
        _wait(lambda: len(t.langfuse.spans(OTEL_PATH)) == len(samples))
        _wait(
            lambda: len([s for s in t.otlp.spans("/v1/traces") if s["kind"] == 3]) == len(samples)
        )
    reached_upstream = b"".join(r.body for r in upstream.received)
    removed = {v for v in values if v.encode() not in reached_upstream}
    assert len(removed) >= 0.9 * len(values), "the PII policy should redact most of the corpus"
    otlp_bodies = b"".join(e.body for e in t.otlp.exports)
    langfuse_bodies = b"".join(e.body for e in t.langfuse.exports)
    memory = repr([(s.name, dict(s.attributes or {})) for s in t.memory.get_finished_spans()])
    assert b"langfuse.observation.input" in langfuse_bodies  # content is sent, redacted
    for value in values:  # spans never carry content at all
        assert value.encode() not in otlp_bodies and value not in memory, "PII in a span"
    for value in removed:  # Langfuse gets what the provider got
        assert value.encode() not in langfuse_bodies, "PII in the Langfuse payload"
        assert orjson.dumps(value)[1:-1] not in langfuse_bodies


def _sdk_generation(receiver_url: str, facts: dict[str, Any]) -> dict[str, Any]:
    """What the `langfuse` SDK itself exports for the same facts."""
    import datetime as dt

    from langfuse import Langfuse, propagate_attributes
    from opentelemetry.sdk.trace import TracerProvider

    client = Langfuse(
        public_key="pk-lf-sdk",
        secret_key="sk-lf-sdk",
        base_url=receiver_url,
        tracer_provider=TracerProvider(),
    )
    try:
        with propagate_attributes(
            user_id=facts["user.id"],
            session_id=facts["session.id"],
            tags=facts["langfuse.trace.tags"],
            metadata={"tenant_id": orjson.loads(facts["langfuse.trace.metadata.tenant_id"])},
            trace_name=facts["langfuse.trace.name"],
        ):
            prefix = "langfuse.observation.metadata."
            generation = client.start_observation(
                trace_context={"trace_id": facts["trace_id"], "parent_span_id": CLIENT_SPAN},
                name="chat upstream-gpt",
                as_type="generation",
                model=facts["langfuse.observation.model.name"],
                input=orjson.loads(facts["langfuse.observation.input"]),
                output=orjson.loads(facts["langfuse.observation.output"]),
                usage_details=orjson.loads(facts["langfuse.observation.usage_details"]),
                cost_details=orjson.loads(facts["langfuse.observation.cost_details"]),
                model_parameters=orjson.loads(facts["langfuse.observation.model.parameters"]),
                metadata={
                    k.removeprefix(prefix): orjson.loads(v)
                    for k, v in facts.items()
                    if k.startswith(prefix)
                },
                completion_start_time=dt.datetime.fromisoformat(
                    orjson.loads(facts["langfuse.observation.completion_start_time"])
                ),
            )
            generation.end()
        client.flush()
    finally:
        client.shutdown()
    return facts


def test_langfuse_attributes_match_what_the_langfuse_sdk_exports(upstream: FakeUpstream) -> None:
    from langfuse import LangfuseOtelSpanAttributes

    from gateway.telemetry.langfuse import ATTRIBUTES

    for name, value in vars(ATTRIBUTES).items():
        if name.isupper():
            assert getattr(LangfuseOtelSpanAttributes, name) == value, name

    with traced(upstream) as t:
        client = openai.OpenAI(base_url=t.url + "/v1", api_key=KEY, max_retries=0)
        client.chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "compare"}],
            user="end-user-9",
            temperature=0.5,
            extra_headers={
                "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
                "x-railgate-session-id": "s-9",
            },
        )
        _wait(lambda: _by_trace(t.langfuse.spans(OTEL_PATH), CLIENT_TRACE))
        (ours,) = _by_trace(t.langfuse.spans(OTEL_PATH), CLIENT_TRACE)
        mine = attributes(ours)
        sdk_receiver = Receiver()
        with ServerThread(sdk_receiver) as server:
            _sdk_generation(server.url, {**mine, "trace_id": CLIENT_TRACE})
        (theirs,) = sdk_receiver.spans(OTEL_PATH)
    sdk = attributes(theirs)
    assert theirs["traceId"] == ours["traceId"] and theirs["parentSpanId"] == ours["parentSpanId"]
    assert set(sdk) <= set(mine), set(sdk) - set(mine)
    for key, value in sdk.items():
        if isinstance(value, str) and value[:1] in '[{"':  # JSON-encoded by both sides
            left, right = orjson.loads(value), orjson.loads(mine[key])
            if key.endswith("completion_start_time"):
                left, right = left[:23], right[:23]  # the SDK keeps µs as we do; zone as Z
            assert left == right, key
        else:
            assert value == mine[key], key
