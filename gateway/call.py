"""`Call`: everything the gateway knows about one client request while it is served.

Created by the proxy after authentication and routing, passed to every seam
(limits, guards, usage). Per-request state lives here, never on shared objects.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from gateway.providers.registry import Route
from gateway.schemas import ClientRequest, Usage
from gateway.telemetry.tracecontext import TraceContext
from gateway.tenancy import Caller
from rails.base import GuardContext

__all__ = ["Call"]


@dataclass(slots=True)
class Call:
    request_id: str
    caller: Caller
    route: Route
    request: ClientRequest
    trace: TraceContext
    user: str | None = None
    """End user named by the OpenAI `user` field or `x-railgate-user`."""
    session_id: str | None = None
    """Conversation id the client sent in `x-railgate-session-id` (traces group by it)."""
    client_ip: str | None = None
    started: float = field(default_factory=time.perf_counter)
    """`perf_counter()` when the request reached the proxy (before authentication)."""
    wall_ns: int = field(default_factory=time.time_ns)
    """Unix time in ns at `started` (span timestamps are derived from it)."""
    authed: float | None = None
    """When authentication, parsing and routing were done (admission starts)."""
    admitted: float | None = None
    """When the limits admitted the call."""
    input_done: float | None = None
    """When the input stage (rails on the prompt) was done."""
    first_byte: float | None = None
    upstream_started: float | None = None
    """`perf_counter()` when the upstream call was sent (after pacing); None if never."""
    upstream_ended: float | None = None
    """When the upstream call ended: the answer, the end of the stream, or its failure."""
    ended: float | None = None
    """When the proxy finished the call (the last byte sent, or the error)."""
    usage: Usage | None = None
    response_model: str | None = None
    """The model the upstream says answered (its `model` field)."""
    finish_reasons: list[str] | None = None
    """Each choice's `finish_reason` as the upstream reported it."""
    status: int = 200
    error: str | None = None
    """Error code when the call failed (e.g. `upstream_timeout`, `client_disconnected`)."""
    guards: GuardContext | None = None
    """The rails' per-request state (findings, pseudonym vault), once a rail ran."""
    pending: asyncio.Task[None] | None = None
    """Input rails running alongside the upstream call (`mode: parallel`)."""
    keep_output: bool = False
    """Keep the upstream's answer (`upstream_reply` / `upstream_events`) for telemetry
    that records content (Langfuse with `send_content`)."""
    upstream_reply: bytes | None = None
    """The upstream's complete answer as received, before the output stage."""
    upstream_events: list[bytes] | None = None
    """The upstream's stream events as received, before the output stage."""
    parameters: dict[str, int | float | tuple[str, ...]] | None = None
    """The body's GenAI request parameters, for telemetry (`spans.call_parameters`)."""

    def at_ns(self, moment: float) -> int:
        """Unix time in ns of a `perf_counter()` reading taken during this call."""
        return self.wall_ns + int((moment - self.started) * 1e9)
