"""The telemetry seam: observers of finished calls and of other HTTP exchanges.

The proxy calls `Telemetry.finished(call, record)` once per call (after the answer was
sent, from the background task that also settles limits and writes the ledger). An
exchange that never became a call (bad key, malformed body, unknown model, a route
other than the proxy's) is reported once as an `Exchange` by the front door.
Observers must be quick and must not raise; `Telemetry` contains and counts it when
one does, so a broken exporter never loses the usage record.

Finished calls reach the observers in batches: a call waits up to `BATCH_S` for
company, then each observer takes the whole batch in turn. Run between requests, one
call at a time, the observers' code and data are evicted from the CPU caches by the
request path (and evict it in turn): measured in the running gateway, telemetry cost
~2x what the same work costs in a loop. Batched, telemetry on vs. off went from +38-63
to +12-42 µs of CPU per call (5-round runs), and the access log and metrics (always on)
got cheaper too (bench/RESULTS.md, 2026-12-05).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.call import Call
    from gateway.ledger.records import UsageRecord
    from gateway.store.base import Tenant

__all__ = ["CallObserver", "Exchange", "Telemetry"]

log = logging.getLogger("railgate.telemetry")

BATCH_S = 0.005
"""How long a finished call may wait for others before the observers see it."""
MAX_BATCH = 256
"""Calls handed over at once at most (bounds the time one batch holds the loop)."""


@dataclass(frozen=True, slots=True)
class Exchange:
    """One HTTP request/response that is not a proxied call (ids and outcome only)."""

    request_id: str
    method: str
    path: str
    status: int
    duration_ms: float
    client_ip: str | None = None
    error: str | None = None
    """Error code of the answer, e.g. `invalid_api_key`."""
    trace_id: str | None = None
    proxied: bool = False
    """A proxy route (`/v1/chat/completions`, …) refused before it became a call."""


class CallObserver(Protocol):
    def finished(self, call: Call, record: UsageRecord) -> None:
        """A proxied call ended (any outcome); `record` is its priced usage record."""

    def exchanged(self, exchange: Exchange) -> None:
        """An exchange that never became a call ended."""


class Telemetry:
    """Fans calls out to the observers; says which tenants' traces keep content."""

    def __init__(
        self,
        observers: Sequence[CallObserver] = (),
        wants_content: Callable[[Tenant], bool] | None = None,
    ) -> None:
        self.observers = tuple(observers)
        self._wants_content = wants_content
        self.failures = 0
        self._pending: list[tuple[Call, UsageRecord]] = []
        self._timer: asyncio.TimerHandle | None = None

    def wants_content(self, tenant: Tenant) -> bool:
        """Whether a tenant's calls must keep the upstream answer (Langfuse content)."""
        return self._wants_content is not None and self._wants_content(tenant)

    def finished(self, call: Call, record: UsageRecord) -> None:
        """Queue a finished call for the observers (at once outside an event loop)."""
        pending = self._pending
        pending.append((call, record))
        if len(pending) >= MAX_BATCH:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(BATCH_S, self.flush)

    def flush(self) -> None:
        """Hand the waiting calls to the observers, one observer after the other; also
        called at shutdown, before the exporters close."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        for observer in self.observers:
            for call, record in pending:
                try:
                    observer.finished(call, record)
                except Exception as exc:
                    self._failed(observer, exc)

    def exchanged(self, exchange: Exchange) -> None:
        for observer in self.observers:
            try:
                observer.exchanged(exchange)
            except Exception as exc:
                self._failed(observer, exc)

    def _failed(self, observer: CallObserver, exc: Exception) -> None:
        self.failures += 1
        log.error("telemetry observer %s failed (%s)", type(observer).__name__, type(exc).__name__)
