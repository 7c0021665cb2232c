"""The telemetry seam: observers of finished calls and of other HTTP exchanges.

The proxy calls `Telemetry.finished(call, record)` once per call (after the answer was
sent, from the background task that also settles limits and writes the ledger). An
exchange that never became a call (bad key, malformed body, unknown model, a route
other than the proxy's) is reported once as an `Exchange` by the front door.
Observers must be quick and must not raise; `Telemetry` contains and counts it when
one does, so a broken exporter never loses the usage record.
"""

from __future__ import annotations

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

    def wants_content(self, tenant: Tenant) -> bool:
        """Whether a tenant's calls must keep the upstream answer (Langfuse content)."""
        return self._wants_content is not None and self._wants_content(tenant)

    def finished(self, call: Call, record: UsageRecord) -> None:
        for observer in self.observers:
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
