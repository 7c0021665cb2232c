"""Which rules apply to one call: its tenant's, its key's and its tenant-and-model limits.

Store keys (the store adds its prefix) carry the tenant as a Redis Cluster hash tag, so
one script call covers every rule of a request:

    {<tenant>}:rl:<scope>:rps|rpm|tpm|conc     scope: t | k:<key id> | m:<model>
    {<tenant>}:rl:<scope>:usd:d:<YYYYMMDD>      daily spend, micro-USD
    {<tenant>}:rl:<scope>:usd:m:<YYYYMM>        monthly spend, micro-USD
    {provider:<name>}:pace:rpm|tpm|block        upstream pacing (`provider_rules`)
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterator
from typing import Any

from gateway.call import Call
from gateway.limits.rules import TOKENS, Rule, RuleKind, Unit
from gateway.limits.spec import Limits, ModelLimits, ProviderLimits

__all__ = [
    "BUDGET_GRACE_MS",
    "RulesCache",
    "call_rules",
    "fail_mode",
    "has_limits",
    "provider_rules",
]

MINUTE_MS = 60_000
SECOND_MS = 1_000
RULES_TTL_S = 1.0
"""A cached rule list is rebuilt after this long (budgets' time left stays within 1 s)."""
MAX_CACHED_LISTS = 4096
BUDGET_GRACE_MS = 3_600_000
"""Budget counters outlive their period by an hour, for late settlements and reports."""


def has_limits(call: Call) -> bool:
    tenant, key = call.caller.tenant, call.caller.key
    return bool(
        (tenant.limits is not None and not tenant.limits.empty)
        or (key.limits is not None and not key.limits.empty)
        or (tenant.model_limits and call.route.model.name in tenant.model_limits)
    )


def fail_mode(call: Call) -> str:
    """`closed` when the tenant's or the key's limits say so, else `open`."""
    for limits in (call.caller.tenant.limits, call.caller.key.limits):
        if limits is not None and limits.fail_mode == "closed":
            return "closed"
    return "open"


def _periods(now: float) -> tuple[str, int, str, int]:
    """(day id, ms left in the UTC day, month id, ms left in the UTC month)."""
    t = time.gmtime(now)
    day_end = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0)) + 86_400
    days = calendar.monthrange(t.tm_year, t.tm_mon)[1]
    month_end = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0)) + days * 86_400
    return (
        f"{t.tm_year:04d}{t.tm_mon:02d}{t.tm_mday:02d}",
        int((day_end - now) * 1000),
        f"{t.tm_year:04d}{t.tm_mon:02d}",
        int((month_end - now) * 1000),
    )


_COUNTED: tuple[tuple[str, RuleKind, int, Unit, str], ...] = (
    ("rps", "window", SECOND_MS, "requests", "requests per second"),
    ("rpm", "window", MINUTE_MS, "requests", "requests per minute"),
    ("tpm", "window", MINUTE_MS, "tokens", "tokens per minute"),
    ("concurrency", "lease", 0, "concurrency", "concurrent requests"),
)
"""(field, kind, window ms (leases: the lease time), unit, name) of the counted limits."""


def _scope_rules(
    base: str, label: str, limits: Limits | ModelLimits, lease_ms: int, now: float
) -> Iterator[Rule]:
    if isinstance(limits, Limits) and (
        limits.budget_usd_day is not None or limits.budget_usd_month is not None
    ):
        day, day_left, month, month_left = _periods(now)
        for usd, period, left, name in (
            (limits.budget_usd_day, f"d:{day}", day_left, "daily budget"),
            (limits.budget_usd_month, f"m:{month}", month_left, "monthly budget"),
        ):
            if usd is not None:
                limit = round(usd * 1_000_000)
                window = left + BUDGET_GRACE_MS
                yield Rule(f"{base}:usd:{period}", "budget", limit, window, 0, "usd", name + label)
    for field, kind, window, unit, name in _COUNTED:
        count = getattr(limits, field, None)
        if count is not None:
            amount = TOKENS if unit == "tokens" else 1
            yield Rule(
                f"{base}:{field[:4]}",
                kind,
                count,
                window or lease_ms,
                amount,
                unit,
                name + label,
            )


def call_rules(call: Call, lease_ms: int) -> tuple[tuple[Rule, ...], float]:
    """Every rule for `call`, and for how many seconds the list stays exact (a budget's
    key and its time left change with the clock; everything else only with the config)."""
    tenant, key, model = call.caller.tenant, call.caller.key, call.route.model.name
    root = f"{{{tenant.id}}}:rl"
    now = time.time()
    rules: list[Rule] = []
    if tenant.limits is not None:
        rules += _scope_rules(f"{root}:t", "", tenant.limits, lease_ms, now)
    if key.limits is not None:
        rules += _scope_rules(f"{root}:k:{key.id}", " (key)", key.limits, lease_ms, now)
    if tenant.model_limits and model in tenant.model_limits:
        rules += _scope_rules(
            f"{root}:m:{model}", f" ({model})", tenant.model_limits[model], lease_ms, now
        )
    # Budgets first: an exhausted budget is the reason a client must hear about.
    rules.sort(key=lambda r: r.kind != "budget")
    budgets = [r.window_ms - BUDGET_GRACE_MS for r in rules if r.kind == "budget"]
    valid_s = min([RULES_TTL_S * 1000, *budgets]) / 1000
    return tuple(rules), valid_s


class RulesCache:
    """`call_rules` per (tenant, key, model, their limits), reused while exact.

    Building the list costs more than checking it; and one list object per tenant, key
    and model lets a store backend encode it once (`RedisLimits`). Lists of limits that
    changed (store-edited tenants, later the admin API) miss by value and are rebuilt."""

    def __init__(self, lease_ms: int) -> None:
        self._lease_ms = lease_ms
        self._lists: dict[tuple[Any, ...], tuple[float, tuple[Rule, ...]]] = {}

    def rules(self, call: Call) -> tuple[Rule, ...]:
        tenant, key, model = call.caller.tenant, call.caller.key, call.route.model.name
        per_model = tenant.model_limits.get(model) if tenant.model_limits else None
        index = (tenant.id, key.id, model, tenant.limits, key.limits, per_model)
        now = time.monotonic()
        found = self._lists.get(index)
        if found is not None and found[0] > now:
            return found[1]
        rules, valid_s = call_rules(call, self._lease_ms)
        if len(self._lists) >= MAX_CACHED_LISTS:
            self._lists.clear()
        self._lists[index] = (now + valid_s, rules)
        return rules


def provider_rules(name: str, limits: ProviderLimits) -> tuple[tuple[Rule, ...], str]:
    """(window rules, block key) of one provider's pacing."""
    root = f"{{provider:{name}}}:pace"
    rules = []
    if limits.rpm is not None:
        rules.append(
            Rule(
                f"{root}:rpm",
                "window",
                limits.rpm,
                MINUTE_MS,
                1,
                "requests",
                f"provider {name} requests per minute",
            )
        )
    if limits.tpm is not None:
        rules.append(
            Rule(
                f"{root}:tpm",
                "window",
                limits.tpm,
                MINUTE_MS,
                TOKENS,
                "tokens",
                f"provider {name} tokens per minute",
            )
        )
    return tuple(rules), f"{root}:block"
