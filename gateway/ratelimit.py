"""Admission control seam: reserve before the upstream call, settle after it.

The flow (tensorzero-style tickets): `admit(call)` reserves what the call may use and
raises `RateLimited` when it must not run; `pace(ticket, call)` runs right before the
upstream call and may wait for the provider's own limits; `settle(ticket, call)` runs
once the call has ended (answer, error or disconnect) and reconciles with the real
usage. `gateway.limits.StoreLimiter` implements it on the store.
"""

from __future__ import annotations

from typing import Protocol

from gateway.call import Call

__all__ = ["Limiter", "Ticket"]


class Ticket(Protocol):
    """What `admit()` reserved; opaque to the proxy."""

    @property
    def headers(self) -> dict[str, str]:
        """`x-ratelimit-*` headers for the response."""


class Limiter(Protocol):
    async def admit(self, call: Call) -> Ticket:
        """Runs after authentication and routing, before any guard or upstream call."""

    async def pace(self, ticket: Ticket, call: Call) -> None:
        """Runs right before the upstream call (not for refusals); may sleep or raise."""

    async def settle(self, ticket: Ticket, call: Call) -> None:
        """Runs exactly once per admitted call, after it ended, with `call.usage` filled in."""

    async def close(self) -> None:
        """Stops background work; called once at shutdown."""
