"""Build the telemetry of one app from its settings and the `OTEL_*` environment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from gateway.config import Settings
from gateway.metrics import Counters
from gateway.telemetry.access_log import AccessLog
from gateway.telemetry.metrics import CallMetrics
from gateway.telemetry.observer import CallObserver, Telemetry

__all__ = ["Exporter", "build_telemetry"]


class Exporter(Protocol):
    """A background sender the app's lifespan starts and (boundedly) closes."""

    def start(self) -> None: ...

    async def close(self) -> None: ...


def build_telemetry(
    settings: Settings, counters: Counters, env: Mapping[str, str] | None = None
) -> tuple[Telemetry, list[Exporter]]:
    observers: list[CallObserver] = [CallMetrics(counters)]
    if settings.telemetry.access_log:
        observers.append(AccessLog())
    return Telemetry(observers), []
