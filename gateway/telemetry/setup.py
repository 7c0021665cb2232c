"""Build the telemetry of one app from its settings and the `OTEL_*` environment.

Observers, in order: per-call metrics, the access log (unless `telemetry.access_log`
is off), OpenTelemetry spans (when an exporter is configured) and Langfuse (when a
project is). With neither, no span is ever built.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from gateway.config import Settings
from gateway.metrics import Counters
from gateway.telemetry.access_log import AccessLog
from gateway.telemetry.exporter import BatchExporter
from gateway.telemetry.langfuse import langfuse_traces
from gateway.telemetry.metrics import CallMetrics
from gateway.telemetry.observer import CallObserver, Telemetry
from gateway.telemetry.otlp import otlp_config
from gateway.telemetry.sdk import SdkSpans, sdk_processors
from gateway.telemetry.spans import SpanFactory
from gateway.telemetry.tracing import SpanSink, Tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

__all__ = ["Exporter", "build_telemetry"]


class Exporter(Protocol):
    """A background sender the app's lifespan starts and (boundedly) closes."""

    def start(self) -> None: ...

    async def close(self) -> None: ...


def build_telemetry(
    settings: Settings,
    counters: Counters,
    env: Mapping[str, str] | None = None,
    span_processors: Sequence[SpanProcessor] = (),
) -> tuple[Telemetry, list[Exporter]]:
    """`span_processors`: extra SDK processors that get every span (tests use an
    in-memory exporter); they turn tracing on by themselves."""
    env = os.environ if env is None else env
    observers: list[CallObserver] = [CallMetrics(counters)]
    exporters: list[Exporter] = []
    if settings.telemetry.access_log:
        observers.append(AccessLog())
    config = otlp_config(env)
    export = settings.telemetry.export
    sinks: list[SpanSink] = []
    if "otlp" in config.exporters and config.protocol == "http/json":
        otlp = BatchExporter(
            "otlp",
            config.endpoint,
            export,
            counters,
            config.resource,
            headers=config.headers,
            timeout_s=config.timeout_s,
            compress=config.gzip,
        )
        sinks.append(otlp)
        exporters.append(otlp)
    processors = [*sdk_processors(config, export), *span_processors]
    if processors:
        sdk = SdkSpans(processors, config.resource, export.shutdown_timeout_s)
        sinks.append(sdk)
        exporters.append(sdk)
    if sinks:
        observers.append(Tracing(SpanFactory(settings), sinks, config.sampler))
    langfuse = langfuse_traces(settings, counters, env)
    observers.append(langfuse)
    exporters.append(langfuse)
    return Telemetry(observers, langfuse.wants_content), exporters
