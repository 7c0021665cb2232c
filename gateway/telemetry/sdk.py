"""Spans handed to OpenTelemetry SDK span processors (optional extra `railgate[otel-sdk]`).

Used for `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` (the SDK's OTLP exporter),
`OTEL_TRACES_EXPORTER=console`, and any processor passed in (tests attach an
`InMemorySpanExporter`). Each `Span` becomes a finished `ReadableSpan` with the same
ids, times and attributes (decoded from the OTLP JSON a `Span` keeps them in, ~0.2 µs
an attribute: small next to the SDK's own cost) and goes to `processor.on_end`; the
SDK's batch processor exports from its own thread. Its queue drops silently when full
(the SDK logs it), so drops on this path are not in `railgate_telemetry_dropped_total`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from gateway.config import ConfigError, ExportSettings
from gateway.telemetry.otlp import VERSION, OtlpConfig
from gateway.telemetry.spans import AttributeValue, Span

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

__all__ = ["SdkSpans", "sdk_processors"]


class SdkSpans:
    def __init__(
        self,
        processors: Sequence[SpanProcessor],
        resource: Mapping[str, AttributeValue],
        shutdown_timeout_s: float = 2.0,
    ) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        self._processors = tuple(processors)
        self._resource = Resource.create(dict(resource))
        self._scope = InstrumentationScope("railgate", VERSION)
        self._context = SpanContext
        self._kinds = {1: SpanKind.INTERNAL, 2: SpanKind.SERVER, 3: SpanKind.CLIENT}
        self._flags = TraceFlags(TraceFlags.SAMPLED)
        self._ok = Status(StatusCode.UNSET)
        self._status = Status
        self._error = StatusCode.ERROR
        self._shutdown_timeout_s = shutdown_timeout_s

    def submit(self, spans: list[Span]) -> None:
        from opentelemetry.sdk.trace import ReadableSpan

        for span in spans:
            trace_id = int(span.trace_id, 16)
            readable = ReadableSpan(
                name=span.name,
                context=self._context(trace_id, int(span.span_id, 16), False, self._flags),
                parent=self._context(trace_id, int(span.parent_id, 16), True, self._flags)
                if span.parent_id
                else None,
                resource=self._resource,
                attributes=span.attributes,  # decoded: a new dict per span
                kind=self._kinds[span.kind],
                status=self._status(self._error, span.error) if span.error else self._ok,
                start_time=span.start_ns,
                end_time=span.end_ns,
                instrumentation_scope=self._scope,
            )
            for processor in self._processors:
                processor.on_end(readable)

    def start(self) -> None:
        """Nothing to start: SDK processors run their own threads."""

    async def close(self) -> None:
        """Flush and shut the processors down, for at most the shutdown timeout."""
        for processor in self._processors:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.to_thread(processor.shutdown), self._shutdown_timeout_s
                )


def sdk_processors(config: OtlpConfig, settings: ExportSettings) -> list[SpanProcessor]:
    """The SDK processors `config` asks for: protobuf OTLP and/or console."""
    wants_protobuf = "otlp" in config.exporters and config.protocol == "http/protobuf"
    if not wants_protobuf and "console" not in config.exporters:
        return []
    try:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        raise ConfigError(
            "OTEL_TRACES_EXPORTER",
            "console and http/protobuf need the OpenTelemetry SDK: pip install 'railgate[otel-sdk]'",
        ) from None
    batch = {
        "max_queue_size": settings.queue_spans,
        "max_export_batch_size": min(settings.batch_spans, settings.queue_spans),
        "schedule_delay_millis": settings.interval_ms,
    }
    processors: list[SpanProcessor] = []
    if wants_protobuf:
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=config.endpoint,
            headers=config.headers,
            timeout=config.timeout_s,
            compression=Compression.Gzip if config.gzip else Compression.NoCompression,
        )
        processors.append(BatchSpanProcessor(exporter, **batch))  # type: ignore[arg-type]
    if "console" in config.exporters:
        processors.append(BatchSpanProcessor(ConsoleSpanExporter(), **batch))  # type: ignore[arg-type]
    return processors
