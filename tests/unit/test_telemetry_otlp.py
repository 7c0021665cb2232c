"""Trace context, `OTEL_*` configuration, OTLP JSON encoding and the exporter's bounds."""

from __future__ import annotations

import asyncio

import msgspec
import orjson
import pytest

from gateway.config import (
    ConfigError,
    ExportSettings,
    LangfuseSettings,
    TelemetrySettings,
    load_settings,
)
from gateway.metrics import Counters
from gateway.store.base import Tenant
from gateway.telemetry.exporter import BatchExporter
from gateway.telemetry.langfuse import LangfuseTraces
from gateway.telemetry.otlp import (
    CHUNK_BYTES,
    encode_attributes,
    encode_span,
    otlp_config,
    parse_headers,
    request_chunks,
)
from gateway.telemetry.sdk import SdkSpans
from gateway.telemetry.setup import build_telemetry
from gateway.telemetry.spans import KIND_CLIENT, Span
from gateway.telemetry.tracecontext import TraceContext, trace_context
from gateway.telemetry.tracing import Tracing
from tests.servers import ServerThread
from tests.telemetry_receiver import Receiver

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_trace_context_continues_a_valid_parent_and_starts_a_trace_otherwise() -> None:
    ctx = trace_context({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-00", "tracestate": "a=1"})
    assert (ctx.trace_id, ctx.parent_span_id, ctx.sampled) == (TRACE, "00f067aa0ba902b7", False)
    assert ctx.upstream_traceparent == f"00-{TRACE}-{ctx.upstream_span_id}-00"
    assert ctx.upstream_headers("r1") == {
        "x-request-id": "r1",
        "traceparent": ctx.upstream_traceparent,
        "tracestate": "a=1",
    }
    assert len({ctx.span_id, ctx.upstream_span_id, "00f067aa0ba902b7"}) == 3
    for bad in (
        "",
        f"01-{TRACE}-00f067aa0ba902b7-01",  # unknown version
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # zero parent
        f"00-{TRACE.upper()}-00f067aa0ba902b7-01",  # upper case
    ):
        fresh = trace_context({"traceparent": bad})
        assert fresh.trace_id != TRACE and fresh.parent_span_id is None and fresh.sampled
        assert len(fresh.trace_id) == 32 and int(fresh.trace_id, 16) > 0


def test_no_exporter_unless_configured() -> None:
    assert otlp_config({}).exporters == ()
    assert otlp_config({"OTEL_TRACES_EXPORTER": "none"}).exporters == ()
    on = otlp_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert on.exporters == ("otlp",) and on.endpoint == "http://collector:4318/v1/traces"
    off = otlp_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"})
    assert off.exporters == ()
    telemetry, exporters = build_telemetry(load_settings(env={}), Counters(), env={})
    assert not any(isinstance(e, BatchExporter | SdkSpans) for e in exporters)
    assert not any(isinstance(o, Tracing) for o in telemetry.observers)
    (langfuse,) = [o for o in telemetry.observers if isinstance(o, LangfuseTraces)]
    assert langfuse.project(Tenant(id="acme")) is None  # no project: nothing to export
    assert not telemetry.wants_content(Tenant(id="acme"))


def test_a_tenants_own_langfuse_project_is_opened_on_first_use() -> None:
    env = {"PK": "pk-lf-1", "SK": "sk-lf-1", "PK2": "pk-lf-2", "SK2": "sk-lf-2"}
    default = LangfuseSettings(host="http://lf:3000", public_key_env="PK", secret_key_env="SK")
    settings = msgspec.structs.replace(
        load_settings(env={}),
        telemetry=TelemetrySettings(langfuse=default),
    )
    telemetry, _ = build_telemetry(settings, Counters(), env=env)
    (langfuse,) = [o for o in telemetry.observers if isinstance(o, LangfuseTraces)]
    plain = langfuse.project(Tenant(id="a"))
    own = LangfuseSettings(
        host="http://lf:3000/", public_key_env="PK2", secret_key_env="SK2", send_content=False
    )
    mine = langfuse.project(Tenant(id="b", langfuse=own))
    same_project = LangfuseSettings(
        host="http://lf:3000", public_key_env="PK2", secret_key_env="SK2"
    )
    assert plain is not None and mine is not None and plain.exporter is not mine.exporter
    assert plain.exporter.name == "langfuse" and mine.exporter.name == "langfuse:b"
    assert langfuse.project(Tenant(id="c", langfuse=same_project)).exporter is mine.exporter
    assert telemetry.wants_content(Tenant(id="a")) and not telemetry.wants_content(
        Tenant(id="b", langfuse=own)
    )
    unset = LangfuseSettings(host="http://lf:3000", public_key_env="NOPE", secret_key_env="SK")
    assert langfuse.project(Tenant(id="d", langfuse=unset)) is None


def test_signal_specific_variables_win() -> None:
    config = otlp_config(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://general:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/custom",
            "OTEL_EXPORTER_OTLP_HEADERS": "a=1",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "authorization=Bearer%20x,b=2",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip",
            "OTEL_SERVICE_NAME": "gw",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team=ai",
        }
    )
    assert config.endpoint == "http://traces:4318/custom"
    assert config.headers == {"authorization": "Bearer x", "b": "2"}
    assert config.timeout_s == 2.5 and config.gzip
    assert config.resource["service.name"] == "gw"
    assert config.resource["deployment.environment"] == "prod" and config.resource["team"] == "ai"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
    ],
)
def test_bad_variables_are_config_errors_naming_them(name: str, value: str) -> None:
    env = {"OTEL_TRACES_SAMPLER": "traceidratio", name: value}
    with pytest.raises(ConfigError) as err:
        otlp_config(env)
    assert err.value.path == name


def _ctx(trace_id: str, parent: str | None, sampled: bool) -> TraceContext:
    return TraceContext(trace_id, "a" * 16, "b" * 16, parent, sampled)


def test_samplers() -> None:
    low, high = "0" * 16 + "0" * 15 + "1", "0" * 16 + "f" * 16
    ratio = otlp_config({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"})
    assert ratio.sampler(_ctx(low, None, True)) and not ratio.sampler(_ctx(high, None, True))
    parent_based = otlp_config(
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}
    )
    assert parent_based.sampler(_ctx(high, "c" * 16, True))  # the parent decided
    assert not parent_based.sampler(_ctx(low, "c" * 16, False))
    assert not parent_based.sampler(_ctx(low, None, True))  # a root at ratio 0
    default = otlp_config({})
    assert default.sampler(_ctx(low, None, True)) and not default.sampler(
        _ctx(low, "c" * 16, False)
    )
    assert default.sampler(_ctx(high, "c" * 16, True)) and default.sampler(_ctx(high, None, False))
    assert not otlp_config({"OTEL_TRACES_SAMPLER": "always_off"}).sampler(_ctx(low, None, True))


def test_headers_parse_url_encoded_pairs() -> None:
    assert parse_headers(" x-a = 1 , x-b=%3D%2C ,") == {"x-a": "1", "x-b": "=,"}


def _span(i: int, error: str | None = None) -> Span:
    return Span(
        TRACE,
        f"{i:016x}",
        "00f067aa0ba902b7",
        "chat m",
        KIND_CLIENT,
        1_700_000_000_000_000_000 + i,
        1_700_000_000_500_000_000,
        encode_attributes({"s": "v", "i": 7, "f": 0.5, "b": True, "l": ["stop"]}),
        error,
    )


def test_encoding_follows_the_otlp_json_mapping() -> None:
    spans = [encode_span(_span(1, error="upstream_timeout"))]
    body = orjson.loads(b"".join(request_chunks(spans, b"")))
    (span,) = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert body["resourceSpans"][0]["scopeSpans"][0]["scope"]["name"] == "railgate"
    assert span["traceId"] == TRACE and span["spanId"] == f"{1:016x}"
    assert span["parentSpanId"] == "00f067aa0ba902b7" and span["kind"] == 3
    assert span["startTimeUnixNano"] == "1700000000000000001"
    assert span["status"] == {"code": 2, "message": "upstream_timeout"}
    assert {a["key"]: a["value"] for a in span["attributes"]} == {
        "s": {"stringValue": "v"},
        "i": {"intValue": "7"},
        "f": {"doubleValue": 0.5},
        "b": {"boolValue": True},
        "l": {"arrayValue": {"values": [{"stringValue": "stop"}]}},
    }


async def test_exporter_queue_is_bounded_and_counts_drops() -> None:
    counters = Counters()
    settings = ExportSettings(queue_spans=5, batch_spans=2, interval_ms=10, timeout_ms=200)
    exporter = BatchExporter("t", "http://127.0.0.1:9/v1/traces", settings, counters, {})
    exporter.submit([_span(i) for i in range(4)])
    exporter.submit([_span(i) for i in range(4)])  # one fits, three are dropped
    assert exporter.pending == 5
    assert counters.get("railgate_telemetry_dropped_total", "t") == 3
    exporter.start()  # port 9 refuses: every batch fails and is dropped, counted
    for _ in range(200):
        if exporter.pending == 0:
            break
        await asyncio.sleep(0.01)
    await exporter.close()
    assert counters.get("railgate_telemetry_dropped_total", "t") == 8
    assert counters.get("railgate_telemetry_exported_total", "t") == 0


@pytest.mark.parametrize("compress", [False, True])
async def test_exporter_sends_a_large_batch_whole_in_pieces(compress: bool) -> None:
    counters = Counters()
    settings = ExportSettings(batch_spans=1000, interval_ms=10, timeout_ms=5000)
    spans = [_span(i) for i in range(1000)]
    size = sum(len(encode_span(s)) for s in spans)
    assert size > 4 * CHUNK_BYTES  # the body is written in several pieces
    receiver = Receiver()
    with ServerThread(receiver) as server:
        exporter = BatchExporter(
            "t",
            server.url + "/v1/traces",
            settings,
            counters,
            {"service.name": "x"},
            None,
            compress=compress,
        )
        exporter.submit(spans)
        exporter.start()
        for _ in range(500):
            if counters.get("railgate_telemetry_exported_total", "t") == len(spans):
                break
            await asyncio.sleep(0.01)
        await exporter.close()
    (export,) = receiver.exports
    assert export.headers.get("content-encoding") == ("gzip" if compress else None)
    assert int(export.headers["content-length"]) == len(export.body)
    assert (len(export.body) < size / 4) if compress else (len(export.body) > size)
    got = export.payload["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert [s["spanId"] for s in got] == [f"{i:016x}" for i in range(len(spans))]
    assert got[-1] == orjson.loads(encode_span(spans[-1]))


@pytest.mark.parametrize("count", [0, 1, 2, 3])
@pytest.mark.parametrize("span_bytes", [40, CHUNK_BYTES // 2, CHUNK_BYTES])
def test_request_chunks_join_to_one_valid_body(count: int, span_bytes: int) -> None:
    # Spans that fill a piece exactly end it: the comma before the next must not dangle.
    spans = [b'{"spanId":"%016x","name":"%b"}' % (i, b"x" * span_bytes) for i in range(count)]
    pieces = request_chunks(spans, encode_attributes({"service.name": "x"}))
    body = orjson.loads(b"".join(pieces))
    got = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert [s["spanId"] for s in got] == [f"{i:016x}" for i in range(count)]
    assert all(len(p) <= 2 * CHUNK_BYTES + 64 for p in pieces)
