"""OTLP/HTTP with the JSON encoding: spans → one `ExportTraceServiceRequest` body, and
the exporter's settings read from the standard `OTEL_*` variables.

The JSON mapping follows the OTLP specification: trace and span ids as hex strings,
64-bit integers (times, int attributes) as decimal strings, enums as numbers. Every
OTLP/HTTP receiver accepts it (the OpenTelemetry Collector, Jaeger, Tempo, Langfuse's
`/api/public/otel/v1/traces`). A `Span` keeps its attributes already encoded (built
from fragments cached per tenant, model and provider, `gateway.telemetry.spans`), so
encoding a span is one string format around them: 1-2 µs, where the SDK's protobuf
encoder measured ~38 µs a span on these machines (bench/RESULTS.md,
bench/telemetry_micro.py). `http/protobuf` remains available through the SDK
(`gateway.telemetry.sdk`), and `console` prints spans through it.

Variables read (the signal-specific `..._TRACES_...` form wins over the general one):

    OTEL_SDK_DISABLED                       true: no spans at all
    OTEL_TRACES_EXPORTER                    otlp | console | none (comma list); default
                                            otlp when an endpoint is set, else none
    OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT    the general one gets `/v1/traces` appended
    OTEL_EXPORTER_OTLP[_TRACES]_HEADERS     k=v,k2=v2 (URL-encoded values)
    OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT     milliseconds (default 10000)
    OTEL_EXPORTER_OTLP[_TRACES]_COMPRESSION gzip | none
    OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL    http/json (default here) | http/protobuf
    OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    OTEL_TRACES_SAMPLER[_ARG]               always_on | always_off | traceidratio |
                                            parentbased_{always_on,always_off,traceidratio}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote

import orjson

from gateway.config import ConfigError
from gateway.telemetry.tracecontext import TraceContext

if TYPE_CHECKING:
    from gateway.telemetry.spans import Span

__all__ = [
    "AttributeKey",
    "AttributeValue",
    "OtlpConfig",
    "decode_attributes",
    "encode_attributes",
    "encode_span",
    "json_attribute",
    "key_value",
    "otlp_config",
    "parse_headers",
]

AttributeValue = str | bool | int | float | list[str] | tuple[str, ...]
"""A span attribute's value: a list or tuple is an array of strings."""

VERSION = "0.1.0"
SCOPE = {"name": "railgate", "version": VERSION}
_ERROR_STATUS = b',"status":{"code":2,"message":'
"""2: OTLP `Status.StatusCode.STATUS_CODE_ERROR`."""

_dumps = orjson.dumps


@lru_cache(maxsize=1024)
def _key(key: str) -> bytes:
    return b'{"key":' + _dumps(key) + b',"value":{'


def key_value(key: str, value: AttributeValue) -> bytes:
    """One attribute as an OTLP JSON `KeyValue`: the bytes `orjson` gives for
    `{"key": key, "value": {"<type>Value": value}}`, 64-bit integers as decimal strings
    (`bool` before `int`: a `bool` is an `int`)."""
    if isinstance(value, str):
        return _key(key) + b'"stringValue":' + _dumps(value) + b"}}"
    if isinstance(value, bool):
        return _key(key) + (b'"boolValue":true}}' if value else b'"boolValue":false}}')
    if isinstance(value, int):
        return _key(key) + b'"intValue":"%d"}}' % value
    if isinstance(value, float):
        return _key(key) + b'"doubleValue":' + _dumps(value) + b"}}"
    if not isinstance(value, list | tuple):
        raise TypeError(f"attribute {key!r}: unsupported type {type(value).__name__}")
    values = b",".join([b'{"stringValue":' + _dumps(str(v)) + b"}" for v in value])
    return _key(key) + b'"arrayValue":{"values":[' + values + b"]}}}"


class AttributeKey:
    """An attribute key whose OTLP JSON is encoded once, for attributes set on every
    call: a value is then a concatenation away from its `KeyValue` (the bytes
    `key_value` gives), without a lookup or a type dispatch."""

    __slots__ = ("_int", "_json", "_str", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        head = b'{"key":' + _dumps(name) + b',"value":{'
        self._str = head + b'"stringValue":'
        self._int = head + b'"intValue":"'
        self._json = head + b'"stringValue":"'

    def string(self, value: str) -> bytes:
        return self._str + _dumps(value) + b"}}"

    def integer(self, value: int) -> bytes:
        return b'%b%d"}}' % (self._int, value)

    def json(self, value: Any) -> bytes:
        """The string attribute holding the JSON text of `value` (Langfuse's form)."""
        return self.json_text(_dumps(value))

    def json_text(self, text: bytes) -> bytes:
        """The string attribute holding `text`, JSON as `orjson.dumps` wrote it: the bytes
        of `key_value(name, text.decode())` without decoding and re-encoding it. JSON text
        from orjson holds no control character (it escapes them), so as a string it needs
        only its backslashes and quotes escaped."""
        return self.json_escaped(text.replace(b"\\", b"\\\\").replace(b'"', b'\\"'))

    def json_escaped(self, escaped: bytes) -> bytes:
        """The string attribute holding JSON text that is already escaped as the inside
        of a JSON string (its quotes written `\\"`): for texts built from numbers."""
        return b"".join((self._json, escaped, b'"}}'))


def json_attribute(key: str, value: Any) -> bytes:
    """An attribute whose string value is the JSON text of `value` (Langfuse's form)."""
    return key_value(key, _dumps(value).decode())


def encode_attributes(attributes: Mapping[str, AttributeValue]) -> bytes:
    """Attributes as comma-separated OTLP JSON `KeyValue`s (an `attributes` list's
    inside): the form a `Span` keeps them in."""
    return b",".join([key_value(k, v) for k, v in attributes.items()])


def _value(value: dict[str, Any]) -> AttributeValue:
    ((kind, inner),) = value.items()
    if kind == "intValue":
        return int(inner)
    if kind == "arrayValue":
        return [v["stringValue"] for v in inner.get("values", ())]
    return cast(AttributeValue, inner)


def decode_attributes(encoded: bytes) -> dict[str, AttributeValue]:
    """`encode_attributes` reversed (arrays come back as lists): for consumers that want
    values, e.g. the SDK's span processors. Costs ~0.2 µs per attribute."""
    return {a["key"]: _value(a["value"]) for a in orjson.loads(b"[" + encoded + b"]")}


@lru_cache(maxsize=1024)
def _name(name: str) -> str:
    return _dumps(name).decode()


def encode_span(span: Span) -> bytes:
    """One span as OTLP JSON: encoded at once, so a queued span is one `bytes` object
    (nothing for the garbage collector to walk while it waits for its batch). The
    bytes are what `orjson` gives for the span as a dict; ids are lower-case hex
    (`Span`'s invariant), so they need no escaping."""
    head = (
        f'{{"traceId":"{span.trace_id}","spanId":"{span.span_id}","name":{_name(span.name)},'
        f'"kind":{span.kind},"startTimeUnixNano":"{span.start_ns}",'
        f'"endTimeUnixNano":"{span.end_ns}","attributes":['
    ).encode()
    parent, error = span.parent_id, span.error
    if error is None:
        if parent:
            return b"".join(
                (head, span.encoded_attributes, b'],"parentSpanId":"', parent.encode(), b'"}')
            )
        return head + span.encoded_attributes + b"]}"
    tail = b'],"parentSpanId":"' + parent.encode() + b'"' if parent else b"]"
    return b"".join((head, span.encoded_attributes, tail, _ERROR_STATUS, _dumps(error), b"}}"))


CHUNK_BYTES = 64 * 1024
"""Spans are joined into pieces of about this size, never into one body-sized buffer."""


def request_chunks(
    spans: Iterable[bytes],
    resource: bytes,
    scope: Mapping[str, Any] = SCOPE,
) -> list[bytes]:
    """One OTLP/HTTP JSON body (`ExportTraceServiceRequest`) holding encoded `spans`, as
    pieces of about `CHUNK_BYTES` to be written one after another; `resource` as
    `encode_attributes` gives it.

    A batch with Langfuse content runs to megabytes: joined into one `bytes` it is copied
    whole (twice), and each buffer that size comes from fresh pages (`mmap`), thousands
    of page faults a second under load. Pieces of ~64 KB reuse heap memory."""
    head = orjson.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": orjson.Fragment(b"[" + resource + b"]")},
                    "scopeSpans": [{"scope": scope, "spans": []}],
                }
            ]
        }
    )
    # `...,"spans":[]}]}]}` → the spans go between `head[:-6]` and `head[-6:]`.
    pieces = [head[:-6]]
    group: list[bytes] = []
    size = 0
    for span in spans:
        group.append(span)
        size += len(span)
        if size >= CHUNK_BYTES:
            pieces += (b",".join(group), b",")
            group, size = [], 0
    if group:
        pieces.append(b",".join(group))
    elif len(pieces) > 1:
        pieces.pop()  # the comma after the last group
    pieces.append(head[-6:])
    return pieces


def parse_headers(text: str) -> dict[str, str]:
    """`k=v,k2=v2` (W3C baggage-like, URL-encoded values) → dict; bad pairs are errors."""
    out: dict[str, str] = {}
    for pair in text.split(","):
        if not pair.strip():
            continue
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError("expected key=value pairs separated by commas")
        out[unquote(name.strip())] = unquote(value.strip())
    return out


Sampler = Callable[[TraceContext], bool]


@dataclass(frozen=True)
class OtlpConfig:
    exporters: tuple[str, ...]
    """`otlp` and/or `console`; empty: no spans are built at all."""
    endpoint: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0
    gzip: bool = False
    protocol: str = "http/json"
    resource: dict[str, AttributeValue] = field(default_factory=dict)
    sampler: Sampler = field(default=lambda trace: trace.sampled)


def _pick(env: Mapping[str, str], name: str) -> str:
    """The `..._TRACES_<name>` variable, else the general `OTEL_EXPORTER_OTLP_<name>`."""
    return env.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or env.get(f"OTEL_EXPORTER_OTLP_{name}", "")


def otlp_config(env: Mapping[str, str], service_version: str = VERSION) -> OtlpConfig:
    """Read the `OTEL_*` variables; a bad value raises `ConfigError` naming the variable."""
    resource = _resource(env, service_version)
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return OtlpConfig(exporters=(), resource=resource)
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
    if not endpoint and env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    chosen = env.get("OTEL_TRACES_EXPORTER", "otlp" if endpoint else "none")
    exporters = tuple(e.strip().lower() for e in chosen.split(",") if e.strip())
    for name in exporters:
        if name not in ("otlp", "console", "none"):
            raise ConfigError("OTEL_TRACES_EXPORTER", f"unsupported exporter {name!r}")
    exporters = tuple(e for e in exporters if e != "none")
    if "otlp" in exporters and not endpoint:
        endpoint = "http://localhost:4318/v1/traces"
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise ConfigError("OTEL_EXPORTER_OTLP_ENDPOINT", "must be an http:// or https:// URL")
    protocol = _pick(env, "PROTOCOL") or "http/json"
    if protocol not in ("http/json", "http/protobuf"):
        raise ConfigError("OTEL_EXPORTER_OTLP_PROTOCOL", "must be http/json or http/protobuf")
    try:
        headers = parse_headers(_pick(env, "HEADERS"))
    except ValueError as exc:
        raise ConfigError("OTEL_EXPORTER_OTLP_HEADERS", str(exc)) from None
    timeout = _pick(env, "TIMEOUT") or "10000"
    try:
        timeout_s = float(timeout) / 1000
    except ValueError:
        raise ConfigError("OTEL_EXPORTER_OTLP_TIMEOUT", "must be milliseconds") from None
    if timeout_s <= 0:
        raise ConfigError("OTEL_EXPORTER_OTLP_TIMEOUT", "must be positive")
    compression = _pick(env, "COMPRESSION").lower() or "none"
    if compression not in ("gzip", "none"):
        raise ConfigError("OTEL_EXPORTER_OTLP_COMPRESSION", "must be gzip or none")
    return OtlpConfig(
        exporters=exporters,
        endpoint=endpoint,
        headers=headers,
        timeout_s=timeout_s,
        gzip=compression == "gzip",
        protocol=protocol,
        resource=resource,
        sampler=_sampler(env),
    )


def _resource(env: Mapping[str, str], service_version: str) -> dict[str, AttributeValue]:
    resource: dict[str, AttributeValue] = {
        "service.name": "railgate",
        "service.version": service_version,
        "telemetry.sdk.name": "railgate",
        "telemetry.sdk.language": "python",
    }
    try:
        resource.update(parse_headers(env.get("OTEL_RESOURCE_ATTRIBUTES", "")))
    except ValueError as exc:
        raise ConfigError("OTEL_RESOURCE_ATTRIBUTES", str(exc)) from None
    if env.get("OTEL_SERVICE_NAME"):
        resource["service.name"] = env["OTEL_SERVICE_NAME"]
    return resource


def _sampler(env: Mapping[str, str]) -> Sampler:
    name = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    ratio = 1.0
    if name.endswith("traceidratio"):
        try:
            ratio = float(env.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
        except ValueError:
            raise ConfigError("OTEL_TRACES_SAMPLER_ARG", "must be a number") from None
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError("OTEL_TRACES_SAMPLER_ARG", "must be between 0 and 1")
    bound = int(ratio * (1 << 64))

    def by_ratio(trace: TraceContext) -> bool:  # the lower 64 bits, as the SDK does
        return int(trace.trace_id[16:], 16) < bound

    roots: dict[str, Sampler] = {
        "always_on": lambda trace: True,
        "always_off": lambda trace: False,
        "traceidratio": by_ratio,
    }
    base = name.removeprefix("parentbased_")
    if base not in roots:
        raise ConfigError("OTEL_TRACES_SAMPLER", f"unsupported sampler {name!r}")
    root = roots[base]
    if not name.startswith("parentbased_"):
        return root
    if base == "always_on":  # the default, asked once per call: one test
        return lambda trace: trace.sampled or trace.parent_span_id is None
    return lambda trace: trace.sampled if trace.parent_span_id is not None else root(trace)
