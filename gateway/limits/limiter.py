"""`StoreLimiter`: rate limits, budgets and upstream pacing for the proxy, in the store.

Per request, at most one store round trip before the upstream call for the tenant's
limits (every rule of the tenant, its key and its model in one atomic script), one
more when the provider declares its own limits (`pace`, right before sending), and
one after the answer (`settle`: token reconcile, lease release, budget charge), off
the response path. Tenants without limits cost nothing.

Windows are sliding window logs (`rules.py`): exact — at most `limit` in any window,
no 2x burst at a boundary as with fixed windows — and, unlike GCRA, they let a
tenant spend its whole minute at once, which is what "50 requests per minute" means
to the people who buy it. Memory is one small entry per admitted request per window.

When the store fails or is slower than `limiter.timeout_ms`, the call's fail mode
decides: `open` admits (counted in `railgate_limits_fail_open_total`, logged once per
outage), `closed` answers 503 `limits_unavailable`. After a failure the store is left
alone for `retry_after_failure_ms`, then tried again: it reconnects by itself.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from redis.exceptions import RedisError

from gateway.call import Call
from gateway.errors import GatewayError, LimitsUnavailable, QuotaExceeded, RateLimited
from gateway.limits.backend import LimitBackend, Settlement
from gateway.limits.plan import BUDGET_GRACE_MS, RulesCache, fail_mode, has_limits, provider_rules
from gateway.limits.rules import TOKENS, Rule, Verdict
from gateway.limits.spec import LimiterSettings, ProviderLimits
from gateway.limits.tokens import estimate_tokens
from gateway.metrics import Counters
from gateway.ratelimit import Ticket
from gateway.usage import spend_micro_usd

__all__ = ["Reservation", "StoreLimiter"]

log = logging.getLogger("railgate")

T = TypeVar("T")
Spawn = Callable[[Coroutine[Any, Any, Any]], None]


_PROCESS = os.urandom(6).hex()
_SERIAL = itertools.count()


def _reseed() -> None:
    """A forked worker must not repeat its parent's ticket ids."""
    global _PROCESS, _SERIAL
    _PROCESS, _SERIAL = os.urandom(6).hex(), itertools.count()


os.register_at_fork(after_in_child=_reseed)


class Reservation:
    """What one admitted call holds: its rules, its token estimate, its pacing booking."""

    __slots__ = ("booked", "headers", "id", "reserved", "rules", "tokens")

    def __init__(self, rules: tuple[Rule, ...], tokens: int) -> None:
        self.id = f"{_PROCESS}{next(_SERIAL):x}"
        """Unique across replicas (a random process part) without a syscall per request."""
        self.rules = rules
        self.tokens = tokens
        self.headers: dict[str, str] = {}
        self.reserved = True
        """False when the store failed and the call was admitted open."""
        self.booked: tuple[Rule, ...] = ()
        """Provider pacing rules this call booked."""


class _Open:
    headers: dict[str, str] = {}


_OPEN = _Open()


class StoreLimiter:
    def __init__(
        self,
        backend: LimitBackend,
        settings: LimiterSettings,
        providers: Mapping[str, ProviderLimits],
        counters: Counters,
        spawn: Spawn,
    ) -> None:
        self._backend = backend
        self._settings = settings
        self._providers = dict(providers)
        self._counters = counters
        self._spawn = spawn
        backend.deadline_s = settings.timeout_ms / 1000
        self._lease_ms = int(settings.lease_ttl_s * 1000)
        self._rules = RulesCache(self._lease_ms)
        self._pacing = {
            name: provider_rules(name, limits) for name, limits in self._providers.items()
        }
        self._down_until = 0.0
        self._held: dict[str, set[str]] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._next_tighten: dict[str, float] = {}

    # -- admission ---------------------------------------------------------------

    async def admit(self, call: Call) -> Ticket:
        limited = has_limits(call)
        if not limited and call.route.provider.name not in self._providers:
            return _OPEN
        prompt, output = estimate_tokens(call.request, self._settings.default_max_tokens)
        tokens = prompt + output
        ticket = Reservation(self._rules.rules(call) if limited else (), tokens)
        if not ticket.rules:
            return ticket
        verdict = await self._store(
            fail_mode(call), self._backend.admit(ticket.id, ticket.rules, tokens)
        )
        if verdict is None:  # the store failed or is resting: admitted open
            ticket.reserved = False
            return ticket
        if verdict.refused is not None:
            raise self._refusal(verdict, tokens)
        ticket.headers = _headers(ticket.rules, verdict)
        for rule in ticket.rules:
            if rule.kind == "lease":
                self._hold(rule.key, ticket.id)
        return ticket

    def _refusal(self, verdict: Verdict, tokens: int) -> GatewayError:
        rule = verdict.refused
        assert rule is not None
        self._counters.inc("railgate_limits_rejected_total", rule.unit)
        used = verdict.used[0] if verdict.used else rule.limit
        if rule.kind == "budget":
            left_s = max(1, math.ceil((rule.window_ms - BUDGET_GRACE_MS) / 1000))
            return QuotaExceeded(
                f"Spending limit reached: the {rule.name} of USD {rule.limit / 1e6:.6g} is"
                " used up until the period renews (UTC).",
                headers={"retry-after": str(left_s), "x-should-retry": "false"},
            )
        if verdict.retry_ms < 0:
            return RateLimited(
                f"Request too large for the {rule.name} limit of {rule.limit}: it reserves"
                f" {tokens} tokens (prompt estimate + max_tokens). Lower max_tokens.",
                headers={"x-should-retry": "false"},
            )
        retry_s = max(1, math.ceil(verdict.retry_ms / 1000))
        headers = {
            "retry-after": str(retry_s),
            "retry-after-ms": str(max(1, verdict.retry_ms)),
            "x-should-retry": "true",
        }
        if rule.kind == "window":
            limit_name, remaining_name, reset_name = _HEADER_NAMES[rule.unit]
            headers[limit_name] = str(rule.limit)
            headers[remaining_name] = str(max(0, rule.limit - used))
            headers[reset_name] = _duration(verdict.retry_ms)
        return RateLimited(
            f"Rate limit reached for {rule.name}: limit {rule.limit}, in use {used}."
            f" Retry after {retry_s} s.",
            headers=headers,
        )

    # -- upstream pacing ---------------------------------------------------------

    async def pace(self, ticket: Ticket, call: Call) -> None:
        """Right before the upstream call: wait for the provider's window, or refuse."""
        provider = call.route.provider.name
        limits = self._providers.get(provider)
        if limits is None or not isinstance(ticket, Reservation):
            return
        rules, block = self._pacing[provider]
        member = f"{ticket.id}:{call.caller.tenant.id}"
        verdict = await self._store(
            fail_mode(call),
            self._backend.pace(member, rules, block, limits.max_queue_wait_ms, ticket.tokens),
        )
        if verdict is None:
            return
        if verdict.refused is not None:
            self._counters.inc("railgate_pacing_rejected_total", verdict.refused)
            retry_ms = max(1, verdict.wait_ms - limits.max_queue_wait_ms)
            if verdict.refused == "never":
                raise RateLimited(
                    f"Request too large for provider {provider}'s tokens per minute.",
                    headers={"x-should-retry": "false"},
                )
            reason = (
                "its fair share of the queue is taken"
                if verdict.refused == "share"
                else f"the wait would exceed {limits.max_queue_wait_ms} ms"
            )
            raise RateLimited(
                f"Provider {provider} is at its rate limit and {reason}. Retry shortly.",
                headers={
                    "retry-after": str(max(1, math.ceil(retry_ms / 1000))),
                    "retry-after-ms": str(retry_ms),
                    "x-should-retry": "true",
                },
            )
        ticket.booked = rules
        if verdict.wait_ms > 0:
            self._counters.inc("railgate_pacing_waits_total")
            await asyncio.sleep(verdict.wait_ms / 1000)

    def observe(self, provider: str, status: int, headers: Mapping[str, str]) -> None:
        """Every upstream answer's headers: a provider reporting less room than our
        windows think, or answering 429, tightens its windows (off the request path)."""
        limits = self._providers.get(provider)
        if limits is None:
            return
        requests = _int(
            headers.get("x-ratelimit-remaining-requests")
            or headers.get("anthropic-ratelimit-requests-remaining")
        )
        tokens = _int(
            headers.get("x-ratelimit-remaining-tokens")
            or headers.get("anthropic-ratelimit-tokens-remaining")
        )
        block_ms = (_retry_ms(headers) or 1000) if status == 429 else 0
        if requests is None and tokens is None and not block_ms:
            return
        now = time.monotonic()
        if not block_ms and now < self._next_tighten.get(provider, 0.0):
            return
        self._next_tighten[provider] = now + 0.1
        rules, block = self._pacing[provider]
        pairs = [(r, _or_unknown(requests if r.unit == "requests" else tokens)) for r in rules]
        self._spawn(self._quietly(self._backend.tighten(pairs, block, block_ms)))

    # -- settlement --------------------------------------------------------------

    async def settle(self, ticket: Ticket, call: Call) -> None:
        if not isinstance(ticket, Reservation):
            return
        for rule in ticket.rules:
            if rule.kind == "lease":
                self._release(rule.key, ticket.id)
        tokens = _used_tokens(call, ticket.tokens)
        items: list[Settlement] = []
        spend: int | None = None
        for rule in ticket.rules:
            if rule.kind == "budget":
                spend = spend_micro_usd(call) if spend is None else spend
                if spend > 0:
                    items.append((rule, spend))
            elif not ticket.reserved:
                continue
            elif rule.kind == "lease" or (rule.amount == TOKENS and tokens != ticket.tokens):
                items.append((rule, tokens))
        if items:
            await self._quietly(self._backend.settle(ticket.id, items, ticket.tokens))
        if tokens != ticket.tokens:
            booked = [(r, tokens) for r in ticket.booked if r.amount == TOKENS]
            if booked:
                member = f"{ticket.id}:{call.caller.tenant.id}"
                await self._quietly(self._backend.settle(member, booked, ticket.tokens))

    # -- leases ------------------------------------------------------------------

    def _hold(self, key: str, ticket: str) -> None:
        self._held.setdefault(key, set()).add(ticket)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_leases())

    def _release(self, key: str, ticket: str) -> None:
        held = self._held.get(key)
        if held is not None:
            held.discard(ticket)
            if not held:
                del self._held[key]

    async def _renew_leases(self) -> None:
        """Every third of the lease time, push this process's live leases ahead."""
        while self._held:
            await asyncio.sleep(self._lease_ms / 3000)
            for key, tickets in list(self._held.items()):
                if tickets:
                    await self._quietly(self._backend.renew(key, list(tickets), self._lease_ms))

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()

    # -- the store, with deadlines and fail modes --------------------------------

    async def _store(self, mode: str, work: Coroutine[Any, Any, T]) -> T | None:
        """Run one store call; on failure apply `mode` (None = admitted open)."""
        if time.monotonic() >= self._down_until:
            try:
                return await work  # the backend enforces `limiter.timeout_ms`
            except (RedisError, OSError, TimeoutError) as exc:
                self._failed(exc)
        else:
            work.close()
        self._unavailable(mode)
        return None

    def _unavailable(self, mode: str) -> None:
        """The store failed: 503 under `fail_mode: closed`, else admitted open (counted)."""
        if mode == "closed":
            self._counters.inc("railgate_limits_fail_closed_total")
            raise LimitsUnavailable(
                "Rate limits cannot be checked right now; try again shortly.",
                headers={"retry-after": "1"},
            )
        self._counters.inc("railgate_limits_fail_open_total")

    async def _quietly(self, work: Awaitable[Any]) -> None:
        """Store work after the answer: failures are counted, never raised."""
        try:
            await work
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self._counters.inc("railgate_limits_store_errors_total")
        now = time.monotonic()
        if now >= self._down_until:
            log.warning("limits store unavailable (%s); applying fail modes", type(exc).__name__)
        self._down_until = now + self._settings.retry_after_failure_ms / 1000


def _used_tokens(call: Call, reserved: int) -> int:
    """Real tokens from the provider's usage; without usage, 0 when nothing can have been
    generated (refused or failed before an answer), else the reservation stands."""
    usage = call.usage
    if usage is not None:
        return usage.prompt_tokens + usage.completion_tokens
    if call.status not in (200, 499) and call.first_byte is None:
        return 0
    return reserved


def _headers(rules: Sequence[Rule], verdict: Verdict) -> dict[str, str]:
    """OpenAI's `x-ratelimit-*` trio for requests and for tokens: the tightest window."""
    tightest: dict[str, tuple[int, int, int]] = {}  # unit -> (left, limit, reset ms)
    for rule, used, reset in zip(rules, verdict.used, verdict.reset_ms, strict=True):
        if rule.kind == "window":
            left = max(0, rule.limit - used)
            best = tightest.get(rule.unit)
            if best is None or left < best[0]:
                tightest[rule.unit] = (left, rule.limit, reset)
    out: dict[str, str] = {}
    for unit, (left, limit, reset) in tightest.items():
        limit_name, remaining_name, reset_name = _HEADER_NAMES[unit]
        out[limit_name] = str(limit)
        out[remaining_name] = str(left)
        out[reset_name] = _duration(reset)
    return out


_HEADER_NAMES = {
    unit: (
        f"x-ratelimit-limit-{unit}",
        f"x-ratelimit-remaining-{unit}",
        f"x-ratelimit-reset-{unit}",
    )
    for unit in ("requests", "tokens")
}


def _duration(ms: int) -> str:
    """OpenAI's format: `250ms`, `1.5s`, `6m0s`."""
    if ms < 1000:
        return f"{max(0, ms)}ms"
    if ms < 60_000:
        return f"{ms / 1000:g}s"
    minutes, rest = divmod(ms, 60_000)
    return f"{minutes}m{rest / 1000:g}s"


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return max(0, int(float(value)))
    except ValueError:
        return None


def _or_unknown(remaining: int | None) -> int:
    return -1 if remaining is None else remaining


def _retry_ms(headers: Mapping[str, str]) -> int:
    for name, scale in (("retry-after-ms", 1), ("retry-after", 1000)):
        value = headers.get(name)
        if value:
            try:
                return min(600_000, max(0, int(float(value) * scale)))
            except ValueError:
                continue
    return 0
