"""`Tracing`: the observer that turns each finished call into its OpenTelemetry spans."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from gateway.telemetry.observer import Exchange
from gateway.telemetry.otlp import Sampler
from gateway.telemetry.spans import Span, SpanFactory
from gateway.telemetry.tracecontext import TraceContext

if TYPE_CHECKING:
    from gateway.call import Call
    from gateway.ledger.records import UsageRecord

__all__ = ["SpanSink", "Tracing"]


class SpanSink(Protocol):
    def submit(self, spans: list[Span]) -> None:
        """Take finished spans for export; must not block or raise."""


class Tracing:
    def __init__(self, factory: SpanFactory, sinks: Sequence[SpanSink], sampler: Sampler) -> None:
        self._factory = factory
        self._sinks = tuple(sinks)
        self._sampler = sampler

    def finished(self, call: Call, record: UsageRecord) -> None:
        if not self._sampler(call.trace):
            return
        spans = self._factory.call_spans(call, record)
        for sink in self._sinks:
            sink.submit(spans)

    def exchanged(self, exchange: Exchange) -> None:
        """A proxy request refused before it became a call gets its server span."""
        if exchange.trace_id is None:
            return
        root = TraceContext(exchange.trace_id, "", "", None, sampled=True)
        if not self._sampler(root):
            return
        span = self._factory.exchange_span(exchange, time.time_ns())
        if span is not None:
            for sink in self._sinks:
                sink.submit([span])
