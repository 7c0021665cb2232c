"""The limiter's storage interface, implemented by `memory.py` and `redis.py`.

Each method is one atomic step (one Lua script, one round trip on Redis); both
implementations pass `tests/integration/test_limits_contract.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.limits.rules import PaceVerdict, Rule, Verdict

__all__ = ["LimitBackend", "Settlement"]

Settlement = tuple[Rule, int]
"""A reserved rule and the real amount: tokens used, or micro-USD spent for a budget.
For a lease the amount is ignored: the lease is released."""


class LimitBackend(Protocol):
    deadline_s: float
    """Calls not answered within this long fail with `TimeoutError` (set by the limiter)."""

    async def admit(self, ticket: str, rules: Sequence[Rule], tokens: int = 0) -> Verdict:
        """Check every rule; if all pass, reserve them all under `ticket`, else nothing.
        `tokens` is what rules with `amount == TOKENS` reserve."""

    async def settle(self, ticket: str, items: Sequence[Settlement], tokens: int = 0) -> None:
        """Correct reservations to real amounts, release leases, charge budgets; `tokens`
        is what `TOKENS` rules reserved."""

    async def renew(self, key: str, tickets: Sequence[str], ttl_ms: int) -> None:
        """Push the expiry of these live leases of one lease set `ttl_ms` ahead."""

    async def pace(
        self, member: str, rules: Sequence[Rule], block_key: str, max_wait_ms: int, tokens: int = 0
    ) -> PaceVerdict:
        """Book the earliest send time the (provider) window rules allow, if within
        `max_wait_ms`. `member` is `<ticket>:<tenant>` (the tenant for fair sharing)."""

    async def tighten(
        self, rules: Sequence[tuple[Rule, int]], block_key: str, block_ms: int
    ) -> None:
        """The provider reported `remaining` (per rule, -1 unknown) and/or asked to back
        off `block_ms`: shrink the windows to match and block bookings until then."""
