"""W3C trace context of one call: which trace it belongs to and the ids of its spans.

An incoming `traceparent` is continued (same trace id, its span as our server span's
parent, its sampled flag kept); otherwise a new trace starts, sampled. The span ids of
the server span and of the upstream (GenAI client) span are chosen here, before the
upstream call, so the `traceparent` sent upstream names our client span as its parent
and spans built after the call (`gateway.telemetry.spans`) fit the same tree. Ids come from
`random.getrandbits` like the OpenTelemetry SDK's (unique, not secret; no syscall); no
span object exists while the request runs.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["TraceContext", "trace_context"]

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str
    """32 lower-case hex digits."""
    span_id: str
    """The gateway's server span (16 hex)."""
    upstream_span_id: str
    """The upstream call's client span (16 hex): the parent the provider sees."""
    parent_span_id: str | None
    """The client's span, when it sent a `traceparent`."""
    sampled: bool
    tracestate: str | None = None

    @property
    def upstream_traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.upstream_span_id}-{'01' if self.sampled else '00'}"

    def upstream_headers(self, request_id: str) -> dict[str, str]:
        """Headers forwarded upstream: trace context and the request id."""
        out = {"x-request-id": request_id, "traceparent": self.upstream_traceparent}
        if self.tracestate:
            out["tracestate"] = self.tracestate
        return out


def trace_context(headers: Mapping[str, str]) -> TraceContext:
    """Continue the client's valid `traceparent` (version 00), else start a new trace."""
    ids = f"{random.getrandbits(128):032x}"
    match = _TRACEPARENT.match(headers.get("traceparent", ""))
    if match is not None:
        trace_id, parent, flags = match.groups()
        if trace_id != _ZERO_TRACE and parent != _ZERO_SPAN:
            return TraceContext(
                trace_id=trace_id,
                span_id=ids[:16],
                upstream_span_id=ids[16:],
                parent_span_id=parent,
                sampled=bool(int(flags, 16) & 1),
                tracestate=headers.get("tracestate") or None,
            )
    trace_id = f"{random.getrandbits(128) or 1:032x}"
    return TraceContext(
        trace_id=trace_id,
        span_id=ids[:16],
        upstream_span_id=ids[16:],
        parent_span_id=None,
        sampled=True,
    )
