"""The OTLP JSON a span is exported as: built from cached fragments, it must be byte for
byte what encoding the span's attributes one by one with `orjson` gives (the uncached
path, written out here as the reference), and decode to the documented OTLP shape.

The reference encoders below are the straightforward ones: a dict per span and per
attribute value, one `orjson.dumps`; for Langfuse, the generation's attributes as one
dict of values. Fragments and caches may make encoding cheaper, never different.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.call import Call
from gateway.config import parse_settings
from gateway.ledger.records import UsageRecord
from gateway.limits.spec import Limits
from gateway.pricing import price_of
from gateway.providers.mock import MockProvider
from gateway.providers.registry import Route
from gateway.schemas import parse_request, reply_decoder
from gateway.store import ApiKey, Tenant
from gateway.telemetry.langfuse import ATTRIBUTES as A
from gateway.telemetry.langfuse import MAX_CONTENT_CHARS, generation
from gateway.telemetry.otlp import (
    AttributeKey,
    decode_attributes,
    encode_attributes,
    encode_span,
    json_attribute,
    key_value,
    request_chunks,
)
from gateway.telemetry.spans import (
    KIND_CLIENT,
    KIND_INTERNAL,
    Span,
    SpanFactory,
    cached_key_value,
    request_parameters,
)
from gateway.telemetry.tracecontext import trace_context
from gateway.tenancy import Caller
from gateway.usage import record_for
from rails.base import Finding
from rails.testing import make_ctx

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


# The reference: the uncached encoding, one dict per attribute, one orjson.dumps.


def reference_value(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"arrayValue": {"values": [{"stringValue": str(v)} for v in value]}}


def reference_span(span: Span, attributes: dict[str, Any]) -> bytes:
    out: dict[str, Any] = {
        "traceId": span.trace_id,
        "spanId": span.span_id,
        "name": span.name,
        "kind": span.kind,
        "startTimeUnixNano": str(span.start_ns),
        "endTimeUnixNano": str(span.end_ns),
        "attributes": [{"key": k, "value": reference_value(v)} for k, v in attributes.items()],
    }
    if span.parent_id:
        out["parentSpanId"] = span.parent_id
    if span.error is not None:
        out["status"] = {"code": 2, "message": span.error}
    return orjson.dumps(out)


# Attribute values: every type, the characters JSON must escape, and some it must not.

TEXTS = [
    "",
    "plain",
    'q"uote',
    "back\\slash",
    "tab\there\n",
    "\x00\x1f\x7f",
    "é ü 日本 🙂",
    "\u2028",
]
VALUES: list[Any] = [
    *TEXTS,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    2**70,
    0.0,
    -0.0,
    0.5,
    1e20,
    -1.5e-7,
    5e-324,
    ["stop"],
    ["a", 'b"c', "\n"],
    [],
    ("x", "y"),
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_key_value_is_the_uncached_encoding(value: Any) -> None:
    reference = orjson.dumps({"key": 'k"é', "value": reference_value(value)})
    assert key_value('k"é', value) == reference
    if not isinstance(value, list | float):
        assert cached_key_value('k"é', value) == reference
        assert cached_key_value('k"é', value) == reference  # from the cache


def test_cached_values_of_equal_but_different_types_stay_apart() -> None:
    encoded = [cached_key_value("v", v) for v in (1, 1.0, True)]
    assert [decode_attributes(e)["v"] for e in encoded] == [1, 1.0, True]
    assert [type(decode_attributes(e)["v"]) for e in encoded] == [int, float, bool]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_attribute_keys_give_the_bytes_of_key_value(value: Any) -> None:
    key = AttributeKey("langfuse.observation.input")
    text = orjson.dumps(value)
    as_string = key_value(key.name, text.decode())
    assert key.json(value) == as_string == json_attribute(key.name, value)
    assert key.json_text(text) == as_string


@settings(max_examples=200, deadline=None)
@given(text=st.text(), number=st.integers(-(2**70), 2**70))
def test_attribute_key_string_and_integer(text: str, number: int) -> None:
    key = AttributeKey("k")
    assert key.string(text) == key_value("k", text)
    assert key.integer(number) == key_value("k", number)


def test_attributes_decode_back_to_their_values() -> None:
    values = {f"k{i}": v for i, v in enumerate(VALUES)}
    decoded = decode_attributes(encode_attributes(values))
    assert decoded == {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    assert encode_attributes({}) == b"" and decode_attributes(b"") == {}


@pytest.mark.parametrize("parent", [None, PARENT])
@pytest.mark.parametrize("error", [None, "upstream_timeout", 'odd "error"'])
@pytest.mark.parametrize("name", ["chat m", 'chat "quoted" é'])
def test_encode_span_is_the_uncached_encoding(
    parent: str | None, error: str | None, name: str
) -> None:
    attributes = {f"k{i}": v for i, v in enumerate(VALUES)}
    span = Span(TRACE, "a" * 16, parent, name, KIND_CLIENT, 10**18, 10**18 + 5, b"", error)
    span.encoded_attributes = encode_attributes(attributes)
    assert encode_span(span) == reference_span(span, attributes)
    span.encoded_attributes = b""
    assert encode_span(span) == reference_span(span, {})


def test_a_request_decodes_to_the_otlp_shape() -> None:
    span = Span(TRACE, "a" * 16, PARENT, "n", KIND_INTERNAL, 1, 2, key_value("s", "v"))
    resource = encode_attributes({"service.name": "railgate", "n": 3})
    body = orjson.loads(b"".join(request_chunks([encode_span(span), encode_span(span)], resource)))
    (resource_spans,) = body["resourceSpans"]
    assert resource_spans["resource"] == {
        "attributes": [
            {"key": "service.name", "value": {"stringValue": "railgate"}},
            {"key": "n", "value": {"intValue": "3"}},
        ]
    }
    (scope_spans,) = resource_spans["scopeSpans"]
    assert scope_spans["scope"] == {"name": "railgate", "version": "0.1.0"}
    assert [s["spanId"] for s in scope_spans["spans"]] == ["a" * 16] * 2
    assert scope_spans["spans"][0] == {
        "traceId": TRACE,
        "spanId": "a" * 16,
        "name": "n",
        "kind": 1,
        "startTimeUnixNano": "1",
        "endTimeUnixNano": "2",
        "attributes": [{"key": "s", "value": {"stringValue": "v"}}],
        "parentSpanId": PARENT,
    }
    assert orjson.loads(b"".join(request_chunks([], b"")))["resourceSpans"][0]["resource"] == {
        "attributes": []
    }


# Calls: the spans of a finished call, built twice (the second time from the caches).

SETTINGS = parse_settings(
    {
        "providers": [
            {"name": "openai", "type": "openai", "base_url": "https://api.openai.com/v1"},
            {"name": "local", "type": "mock"},
        ],
        "models": [
            {
                "name": "gpt-test",
                "provider": "openai",
                "upstream_model": "upstream-gpt",
                "input_price_per_mtok": 2.5,
                "output_price_per_mtok": 10.0,
            },
            {"name": "local-model", "provider": "local"},
        ],
    },
    {},
)
REPLY = (
    b'{"model":"upstream-gpt-2024","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"Hi \\"there\\"\\n\\u00e9"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":31,"completion_tokens":7,"total_tokens":38,'
    b'"prompt_tokens_details":{"cached_tokens":16}}}'
)


def make_call(
    body: dict[str, Any], model: int = 0, limits: bool = True, **fields: Any
) -> tuple[Call, UsageRecord]:
    route = Route(SETTINGS.models[model], MockProvider(SETTINGS.providers[model]))
    tenant = Tenant(id='acme "corp"', limits=Limits(rpm=60) if limits else None)
    call = Call(
        request_id="req-1",
        caller=Caller(tenant, ApiKey(id="key_1", tenant_id=tenant.id, key_sha256="0" * 64)),
        route=route,
        request=parse_request("chat/completions", orjson.dumps({"model": "m", **body})),
        trace=trace_context({"traceparent": f"00-{TRACE}-{PARENT}-01"}),
        user="alice",
        session_id="s-1",
    )
    call.started, call.wall_ns = 100.0, 1_700_000_000_123_456_789
    call.authed, call.admitted = 100.0002, 100.0004
    call.upstream_started, call.first_byte = 100.002, 100.2123456
    call.upstream_ended, call.ended = 100.3, 100.31
    reply = reply_decoder.decode(REPLY)
    call.usage, call.response_model = reply.usage, reply.model
    call.finish_reasons = ["stop"]
    call.upstream_reply = REPLY
    ctx = make_ctx(tenant_id=tenant.id, request_id="req-1", model="gpt-test")
    ctx.timings_ms["pii"] = 1.5
    ctx.findings.append(Finding("pii", "PERSON", 0, 5, 0.9, "redacted"))
    call.guards = ctx
    for name, value in fields.items():
        setattr(call, name, value)
    return call, record_for(call)


BODY = {
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    "temperature": 0.5,
    "max_tokens": 50,
    "stop": "END",
    "seed": True,  # a bool is no parameter
}


def expected_spans(call: Call, record: UsageRecord) -> dict[str, dict[str, Any]]:
    """Each span's attributes, in order, as the module docstrings document them."""
    tenant = {"railgate.tenant_id": record.tenant_id}
    server: dict[str, Any] = {
        "http.request.method": "POST",
        "http.route": "/v1/chat/completions",
        "url.path": "/v1/chat/completions",
        "http.response.status_code": record.status,
        **tenant,
        "railgate.key_id": "key_1",
        "railgate.request_id": "req-1",
        "gen_ai.request.model": record.model,
    }
    if record.error:
        server["error.type"] = record.error
    client: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "upstream-gpt",
        **tenant,
        "railgate.provider": "openai",
        "server.address": "api.openai.com",
        "server.port": 443,
        "gen_ai.response.model": "upstream-gpt-2024",
        "gen_ai.usage.input_tokens": 31,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.response.finish_reasons": ["stop"],
        **{
            f"gen_ai.request.{k}": v
            for k, v in call.request.body.items()
            if k in ("temperature", "max_tokens", "top_p")
            and not isinstance(v, bool)
            and v is not None
        },
    }
    if "stop" in call.request.body:
        client["gen_ai.request.stop_sequences"] = ["END"]
    if record.status >= 400:
        client["error.type"] = record.error
    return {
        "POST /v1/chat/completions": server,
        "railgate.authenticate": tenant,
        "railgate.limits": tenant,
        "railgate.guard pii": {
            **tenant,
            "railgate.guard.name": "pii",
            "railgate.guard.findings": 1,
        },
        "chat upstream-gpt": client,
    }


@pytest.mark.parametrize("status", [200, 502])
def test_call_spans_are_the_uncached_encoding(status: int) -> None:
    factory = SpanFactory(SETTINGS)
    for _ in range(2):  # the second time every fixed fragment comes from a cache
        call, record = make_call(
            BODY, status=status, error="upstream_status" if status >= 400 else None
        )
        spans = factory.call_spans(call, record)
        expected = expected_spans(call, record)
        assert [s.name for s in spans] == list(expected)
        for span in spans:
            assert span.attributes == expected[span.name]
            assert encode_span(span) == reference_span(span, expected[span.name])
        server, client = spans[0], spans[-1]
        assert (server.span_id, server.parent_id) == (call.trace.span_id, PARENT)
        assert (client.span_id, client.parent_id) == (call.trace.upstream_span_id, server.span_id)
        assert len({s.span_id for s in spans}) == 5
        assert client.start_ns == call.at_ns(100.002) and client.end_ns == call.at_ns(100.3)
        assert server.error == ("upstream_status" if status >= 500 else None)


def test_no_limits_span_when_the_tenant_has_no_limits() -> None:
    call, record = make_call(BODY, limits=False)
    names = [s.name for s in SpanFactory(SETTINGS).call_spans(call, record)]
    assert names == [n for n in expected_spans(call, record) if n != "railgate.limits"]


def test_float_parameters_are_never_taken_from_the_cache() -> None:
    factory = SpanFactory(SETTINGS)
    for temperature in (0.0, -0.0, 1, 1.0):
        call, record = make_call({"messages": BODY["messages"], "temperature": temperature})
        client = factory.call_spans(call, record)[-1]
        (value,) = [
            a["value"]
            for a in orjson.loads(b"[" + client.encoded_attributes + b"]")
            if a["key"] == "gen_ai.request.temperature"
        ]
        assert value == reference_value(temperature)
        assert orjson.dumps(value) == orjson.dumps(reference_value(temperature))


def test_request_parameters_of_a_body() -> None:
    body = {"model": "m", "stop": ["a", "b"], "temperature": 1, "n": 2, "top_p": None}
    first = request_parameters(body)
    assert first == {
        "gen_ai.request.stop_sequences": ("a", "b"),
        "gen_ai.request.temperature": 1,
        "gen_ai.request.choice.count": 2,
    }
    other = dict(body, temperature=0.5)
    assert request_parameters(other)["gen_ai.request.temperature"] == 0.5
    assert request_parameters({"stop": ["a", 1], "max_completion_tokens": 9}) == {
        "gen_ai.request.max_tokens": 9
    }


def reference_generation(call: Call, record: UsageRecord, send_content: bool) -> dict[str, Any]:
    """The generation's attributes, one dict of values (the uncached path)."""

    def js(value: Any) -> str:
        return orjson.dumps(value).decode()

    def capped(value: Any) -> str:
        text = js(value)
        return text if len(text) <= MAX_CONTENT_CHARS else text[:MAX_CONTENT_CHARS] + "…[truncated]"

    input_price, output_price = price_of(call)
    prompt, completion = record.prompt_tokens, record.completion_tokens
    usage = {"input": prompt, "output": completion, "total": prompt + completion}
    if record.cached_tokens:
        usage["input_cached_tokens"] = record.cached_tokens
    if record.reasoning_tokens:
        usage["output_reasoning_tokens"] = record.reasoning_tokens
    input_usd, output_usd = prompt * input_price / 1e6, completion * output_price / 1e6
    attrs: dict[str, Any] = {
        A.OBSERVATION_TYPE: "generation",
        A.AS_ROOT: True,
        A.IS_APP_ROOT: True,
        A.OBSERVATION_MODEL: record.upstream_model,
        A.OBSERVATION_USAGE_DETAILS: js(usage),
        A.OBSERVATION_COST_DETAILS: js(
            {"input": input_usd, "output": output_usd, "total": input_usd + output_usd}
        ),
        A.TRACE_NAME: f"railgate {record.endpoint}",
        A.TRACE_TAGS: ["railgate", f"tenant:{record.tenant_id}"],
        f"{A.TRACE_METADATA}.tenant_id": js(record.tenant_id),
    }
    metadata = {
        "tenant_id": record.tenant_id,
        "key_id": record.key_id,
        "request_id": record.request_id,
        "status": record.status,
        "provider": record.provider,
    }
    if record.rails_calls:
        metadata["rails_cost_usd"] = record.rails_cost_micro_usd / 1e6
    for key, value in metadata.items():
        attrs[f"{A.OBSERVATION_METADATA}.{key}"] = js(value)
    parameters = request_parameters(call.request.body)
    if parameters:
        attrs[A.OBSERVATION_MODEL_PARAMETERS] = js(
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
        attrs[A.OBSERVATION_INPUT] = capped(call.request.body["messages"])
        reply = orjson.loads(call.upstream_reply or b"{}")
        attrs[A.OBSERVATION_OUTPUT] = capped(reply["choices"][0]["message"])
    return attrs


LONG = "ü" * (MAX_CONTENT_CHARS // 2)
"""Fewer characters than the cap in more bytes than it: not cut."""


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (BODY, {}),
        ({"messages": [{"role": "user", "content": LONG}]}, {"status": 504, "error": None}),
        ({"messages": [{"role": "user", "content": LONG * 3}]}, {"user": None, "session_id": None}),
        (
            {"messages": [{"role": "user", "content": "x"}], "temperature": -0.0},
            {"first_byte": None},
        ),
    ],
    ids=["chat", "long-error", "cut", "no-first-byte"],
)
@pytest.mark.parametrize("send_content", [True, False])
def test_the_generation_is_the_uncached_encoding(
    body: dict[str, Any], fields: dict[str, Any], send_content: bool
) -> None:
    for _ in range(2):  # the second time every fixed fragment comes from a cache
        call, record = make_call(body, **fields)
        span = generation(call, record, send_content)
        expected = reference_generation(call, record, send_content)
        assert span.attributes == expected
        assert encode_span(span) == reference_span(span, expected)
        assert (span.span_id, span.parent_id) == (call.trace.upstream_span_id, PARENT)
        assert span.error == (record.error if record.status >= 400 else None)


def test_content_is_cut_by_characters() -> None:
    call, record = make_call({"messages": [{"role": "user", "content": LONG}]})
    sent = generation(call, record, True).attributes[A.OBSERVATION_INPUT]
    assert isinstance(sent, str) and len(sent.encode()) > MAX_CONTENT_CHARS
    assert not sent.endswith("…[truncated]")
    call, record = make_call({"messages": [{"role": "user", "content": LONG * 3}]})
    cut = generation(call, record, True).attributes[A.OBSERVATION_INPUT]
    assert isinstance(cut, str) and cut.endswith("…[truncated]")
    assert len(cut) == MAX_CONTENT_CHARS + len("…[truncated]")
