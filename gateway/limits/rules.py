"""The vocabulary shared by the limiter and its store backends: rules and verdicts.

A `Rule` is one limit applied to one request, already resolved to a store key and an
amount; a backend checks and reserves a list of them in one atomic step. Three kinds:

    window   sliding window log: at most `limit` units (requests or tokens) with a
             timestamp in the last `window_ms`; exact, no boundary bursts
    lease    at most `limit` tickets held at once; each lease expires `window_ms`
             after its last renewal
    budget   a counter (micro-USD) for one calendar period; admission only checks it
             is below `limit`, settlement adds the real cost; `window_ms` is the time
             left in the period
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["TOKENS", "PaceVerdict", "Rule", "RuleKind", "Unit", "Verdict"]

TOKENS = -1
"""The `amount` of a token window: the request's own token estimate, given with each
call (`tokens=`), so one rule list serves every request of a tenant, key and model."""

RuleKind = Literal["window", "lease", "budget"]
Unit = Literal["requests", "tokens", "concurrency", "usd"]


@dataclass(frozen=True, slots=True)
class Rule:
    key: str
    """Store key without the store's prefix; holds a `{hash tag}` (tenant or provider)."""
    kind: RuleKind
    limit: int
    window_ms: int
    amount: int
    """Units reserved per request: 1 request, `TOKENS` (the request's estimate); 0 for budgets."""
    unit: Unit
    name: str
    """What a client reads in an error, e.g. `tokens per minute (key)`."""


@dataclass(frozen=True, slots=True)
class Verdict:
    refused: Rule | None
    """The first rule that did not admit the request; `None` when admitted."""
    retry_ms: int
    """When the refused rule may admit it again; -1: never (the request is too large)."""
    used: tuple[int, ...] = ()
    """Per rule, after admission: units in use (including this request); when refused,
    one item: the refused rule's units in use."""
    reset_ms: tuple[int, ...] = ()
    """Per rule: time until the oldest unit in the window is freed (budgets: period end)."""


@dataclass(frozen=True, slots=True)
class PaceVerdict:
    wait_ms: int
    """How long to wait before sending (0: now). Meaningless when refused."""
    refused: Literal["wait", "never", "share"] | None = None
    """`wait`: longer than allowed; `never`: the request exceeds the window on its own;
    `share`: the tenant already holds its fair share of the provider's queue."""
