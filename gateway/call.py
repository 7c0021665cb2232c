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
from gateway.tenancy import Caller
from rails.base import GuardContext

__all__ = ["Call"]


@dataclass(slots=True)
class Call:
    request_id: str
    caller: Caller
    route: Route
    request: ClientRequest
    trace_headers: dict[str, str]
    user: str | None = None
    """End user named by the OpenAI `user` field or `x-railgate-user`."""
    started: float = field(default_factory=time.perf_counter)
    first_byte: float | None = None
    upstream_started: float | None = None
    """`perf_counter()` when the upstream call was sent (after pacing); None if never."""
    upstream_ended: float | None = None
    """When the upstream call ended: the answer, the end of the stream, or its failure."""
    ended: float | None = None
    """When the proxy finished the call (the last byte sent, or the error)."""
    usage: Usage | None = None
    status: int = 200
    error: str | None = None
    """Error code when the call failed (e.g. `upstream_timeout`, `client_disconnected`)."""
    guards: GuardContext | None = None
    """The rails' per-request state (findings, pseudonym vault), once a rail ran."""
    pending: asyncio.Task[None] | None = None
    """Input rails running alongside the upstream call (`mode: parallel`)."""
