"""Limits in one process's memory: the semantics of `lua/*.lua`, for `memory://`.

Each method runs without an `await`, so on one event loop it is as atomic as a Lua
script on Redis. Time is the monotonic clock (ms); budget counters expire with their
period like the Redis keys do.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.limits.backend import Settlement
from gateway.limits.rules import TOKENS, PaceVerdict, Rule, Verdict

__all__ = ["MemoryLimits"]


_LAST = "\U0010ffff"
"""Sorts after every member: `(t, _LAST)` bisects past all entries at time t."""


def _monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


@dataclass(slots=True)
class _Window:
    entries: list[tuple[int, str]] = field(default_factory=list)
    """(time ms, member), ordered; booked (paced) entries may lie ahead of now."""
    amounts: dict[str, int] = field(default_factory=dict)
    """member -> units, so a settlement finds its entry without a scan."""
    used: int = 0

    def trim(self, now: int, window: int) -> int:
        cut = bisect.bisect_right(self.entries, (now - window, _LAST))
        if cut:
            for _, member in self.entries[:cut]:
                self.used -= self.amounts.pop(member)
            del self.entries[:cut]
        if not self.entries:
            self.used = 0
        return self.used

    def fits_at(self, now: int, limit: int, window: int, amount: int) -> int:
        """Earliest time `amount` more fits under `limit`; -1 if it never can."""
        if amount > limit:
            return -1
        if self.used + amount <= limit:
            return now
        need, freed = self.used + amount - limit, 0
        for at, member in self.entries:
            freed += self.amounts[member]
            if freed >= need:
                return at + window
        return now + window

    def add(self, at: int, member: str, amount: int) -> None:
        old = self.amounts.get(member)
        if old is not None:  # the same member again moves it, like ZADD
            self.entries = [e for e in self.entries if e[1] != member]
            self.used -= old
        bisect.insort(self.entries, (at, member))
        self.amounts[member] = amount
        self.used += amount

    def correct(self, member: str, amount: int) -> None:
        """Set the units of an entry still in the window (absent: nothing to correct)."""
        old = self.amounts.get(member)
        if old is not None:
            self.amounts[member] = amount
            self.used = max(0, self.used + amount - old)

    def reset(self, now: int, window: int) -> int:
        return max(0, self.entries[0][0] + window - now) if self.entries else 0

    def booked(self, now: int) -> list[tuple[str, int]]:
        """(member, units) of the entries booked ahead of `now`."""
        ahead = self.entries[bisect.bisect_right(self.entries, (now, _LAST)) :]
        return [(member, self.amounts[member]) for _, member in ahead]


class MemoryLimits:
    def __init__(self, clock: Callable[[], int] = _monotonic_ms) -> None:
        self._clock = clock
        self.deadline_s = 0.0
        """Unused: nothing here waits."""
        self._windows: dict[str, _Window] = {}
        self._leases: dict[str, dict[str, int]] = {}
        self._budgets: dict[str, tuple[int, int]] = {}
        """key -> (micro-USD spent, expiry time ms)"""
        self._blocks: dict[str, int] = {}

    def _window(self, key: str) -> _Window:
        found = self._windows.get(key)
        if found is None:
            found = self._windows[key] = _Window()
        return found

    def _lease_set(self, key: str, now: int) -> dict[str, int]:
        held = self._leases.setdefault(key, {})
        for ticket in [t for t, expiry in held.items() if expiry <= now]:
            del held[ticket]
        return held

    def _budget(self, key: str, now: int) -> int:
        spent, expiry = self._budgets.get(key, (0, 0))
        return spent if expiry > now else 0

    async def admit(self, ticket: str, rules: Sequence[Rule], tokens: int = 0) -> Verdict:
        now = self._clock()
        used: list[int] = []
        for rule in rules:
            if rule.kind == "window":
                window = self._window(rule.key)
                window.trim(now, rule.window_ms)
                at = window.fits_at(now, rule.limit, rule.window_ms, _amount(rule, tokens))
                if at != now:
                    return Verdict(
                        refused=rule, retry_ms=-1 if at < 0 else at - now, used=(window.used,)
                    )
                used.append(window.used)
            elif rule.kind == "lease":
                held = self._lease_set(rule.key, now)
                if len(held) + 1 > rule.limit:
                    return Verdict(
                        refused=rule,
                        retry_ms=min(1000, min(held.values()) - now),
                        used=(len(held),),
                    )
                used.append(len(held))
            else:
                spent = self._budget(rule.key, now)
                if spent >= rule.limit:
                    return Verdict(refused=rule, retry_ms=rule.window_ms, used=(spent,))
                used.append(spent)
        after: list[int] = []
        resets: list[int] = []
        for rule, before in zip(rules, used, strict=True):
            if rule.kind == "window":
                window = self._window(rule.key)
                amount = _amount(rule, tokens)
                window.add(now, ticket, amount)
                after.append(before + amount)
                resets.append(window.reset(now, rule.window_ms))
            elif rule.kind == "lease":
                self._leases[rule.key][ticket] = now + rule.window_ms
                after.append(before + 1)
                resets.append(0)
            else:
                after.append(before)
                resets.append(rule.window_ms)
        return Verdict(refused=None, retry_ms=0, used=tuple(after), reset_ms=tuple(resets))

    async def settle(self, ticket: str, items: Sequence[Settlement], tokens: int = 0) -> None:
        now = self._clock()
        for rule, actual in items:
            if rule.kind == "window":
                window = self._windows.get(rule.key)
                if window is not None:
                    window.correct(ticket, actual)
            elif rule.kind == "lease":
                self._leases.get(rule.key, {}).pop(ticket, None)
            elif actual > 0:
                spent = self._budget(rule.key, now)
                self._budgets[rule.key] = (spent + actual, now + max(rule.window_ms, 1))
        if len(self._budgets) > 4096:
            self._budgets = {k: v for k, v in self._budgets.items() if v[1] > now}

    async def renew(self, key: str, tickets: Sequence[str], ttl_ms: int) -> None:
        now = self._clock()
        held = self._lease_set(key, now)
        for ticket in tickets:
            if ticket in held:
                held[ticket] = now + ttl_ms

    async def pace(
        self, member: str, rules: Sequence[Rule], block_key: str, max_wait_ms: int, tokens: int = 0
    ) -> PaceVerdict:
        now = self._clock()
        at = max(now, self._blocks.get(block_key, 0))
        windows = [self._window(rule.key) for rule in rules]
        amounts = [_amount(rule, tokens) for rule in rules]
        for rule, window, amount in zip(rules, windows, amounts, strict=True):
            window.trim(now, rule.window_ms)
            fits = window.fits_at(now, rule.limit, rule.window_ms, amount)
            if fits < 0:
                return PaceVerdict(wait_ms=0, refused="never")
            at = max(at, fits)
        wait = at - now
        if wait > max_wait_ms:
            return PaceVerdict(wait_ms=wait, refused="wait")
        if wait > 0 and rules:
            tenant = member.partition(":")[2]
            mine, others = 0, set()
            for booked, units in windows[0].booked(now):
                owner = booked.partition(":")[2] or None
                if owner == tenant:
                    mine += units
                elif owner is not None:
                    others.add(owner)
            first = rules[0]
            share = first.limit * max_wait_ms // first.window_ms // (len(others) + 2)
            if mine > 0 and mine + amounts[0] > share:
                return PaceVerdict(wait_ms=wait, refused="share")
        for window, amount in zip(windows, amounts, strict=True):
            window.add(at, member, amount)
        return PaceVerdict(wait_ms=wait)

    async def tighten(
        self, rules: Sequence[tuple[Rule, int]], block_key: str, block_ms: int
    ) -> None:
        now = self._clock()
        for rule, remaining in rules:
            if remaining < 0:
                continue
            window = self._window(rule.key)
            used = window.trim(now, rule.window_ms)
            booked = sum(units for _, units in window.booked(now))
            gap = rule.limit - (used - booked) - remaining
            if gap > 0:
                window.add(now, f"~{os.urandom(6).hex()}", gap)
        if block_ms > 0:
            self._blocks[block_key] = max(self._blocks.get(block_key, 0), now + block_ms)


def _amount(rule: Rule, tokens: int) -> int:
    return tokens if rule.amount == TOKENS else rule.amount
