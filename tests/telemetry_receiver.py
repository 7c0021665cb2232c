"""A local OTLP/HTTP receiver (collector or Langfuse stand-in) that keeps what it gets.

JSON bodies and protobuf bodies (what the OpenTelemetry / Langfuse SDKs send) are both
decoded into the OTLP JSON shape, so tests read spans one way whatever sent them.
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass
from typing import Any

import orjson

from tests.servers import handle_lifespan, read_body, send_json


@dataclass
class Export:
    path: str
    headers: dict[str, str]
    body: bytes
    """As received (still compressed when it was)."""
    payload: dict[str, Any]
    """The decoded `ExportTraceServiceRequest` in the OTLP JSON shape."""


def _decode(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    raw = gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
    if headers.get("content-type", "").startswith("application/x-protobuf"):
        from google.protobuf.json_format import MessageToDict
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        message = ExportTraceServiceRequest()
        message.ParseFromString(raw)
        payload = MessageToDict(message)
        for rs in payload.get("resourceSpans", []):  # protobuf JSON has base64 ids
            for ss in rs.get("scopeSpans", []):
                for span in ss.get("spans", []):
                    for field in ("traceId", "spanId", "parentSpanId"):
                        if span.get(field):
                            import base64

                            span[field] = base64.b64decode(span[field]).hex()
        return payload
    return orjson.loads(raw)


def attribute_value(value: dict[str, Any]) -> Any:
    ((kind, inner),) = value.items()
    if kind == "arrayValue":
        return [attribute_value(v) for v in inner.get("values", [])]
    if kind == "intValue":
        return int(inner)
    return inner


def attributes(span: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: attribute_value(a["value"]) for a in span.get("attributes", [])}


class Receiver:
    """ASGI app: every POST is kept and answered 200 `{}`."""

    def __init__(self) -> None:
        self.exports: list[Export] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if await handle_lifespan(scope, receive, send):
            return
        body = await read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        export = Export(scope["path"], headers, body, _decode(headers, body))
        with self._lock:
            self.exports.append(export)
        await send_json(send, 200, b"{}")

    def spans(self, path: str | None = None) -> list[dict[str, Any]]:
        """Every span received (at `path` if given), with its resource attributes."""
        with self._lock:
            exports = list(self.exports)
        out = []
        for export in exports:
            if path is not None and export.path != path:
                continue
            for rs in export.payload.get("resourceSpans", []):
                for ss in rs.get("scopeSpans", []):
                    out.extend(ss.get("spans", []))
        return out
