"""What the ledger holds: one `UsageRecord` per call, and sums of them (`UsageTotals`).

Aggregates are kept per tenant and UTC day, by (model, key id, end user), one counter
per metric in `METRICS`; reports add these up and never read raw records. A record
adds one request, its tokens (the main call's) and its cost (the main call's plus its
rails' model calls: what the tenant spent) to its group, and one to each outcome counter
it matches:

    errors        status >= 400 (blocked, limited and disconnected calls included)
    blocked       a rail blocked the prompt or the answer (`content_filter`), also when
                  the policy answered with a refusal instead of an error
    limited       status 429 (a limit, a budget, or the provider said so)
    disconnected  status 499 (the client went away)

A record's ledger id (`entry_id`) is its request id plus its timestamp in microseconds:
writing the same record again (a retried batch) changes nothing, while two calls that
reuse one client-chosen `x-request-id` are both kept, so a tenant cannot hide spend.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import msgspec

__all__ = [
    "DEFAULT_RETENTION",
    "METRICS",
    "GroupBy",
    "Retention",
    "UsageRecord",
    "UsageTotals",
    "anonymous_field",
    "day_end",
    "day_of",
    "days_between",
    "entry_id",
    "group_field",
    "metric_values",
    "sum_fields",
]

GroupBy = Literal["day", "model", "key", "user"]


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One finished call. Ids, counts and timings only: never a prompt, answer or key."""

    request_id: str
    tenant_id: str
    key_id: str
    model: str
    """The configured model that served the call (reports group by it)."""
    provider: str
    endpoint: str
    stream: bool
    status: int
    error: str | None
    user: str | None
    """End user named by the client (OpenAI `user` field or `x-railgate-user`)."""
    prompt_tokens: int
    completion_tokens: int
    cost_micro_usd: int
    latency_ms: float
    """Total: from the request reaching the proxy to the last byte (or the error)."""
    ttft_ms: float | None
    """Time to the first byte of the answer (the first event of a stream)."""
    timestamp: float
    """Unix time (seconds) the call ended; its UTC day is the aggregate's day."""
    rails_calls: int = 0
    """Model calls the rails made for this request (e.g. NeMo self-checks)."""
    rails_prompt_tokens: int = 0
    rails_completion_tokens: int = 0
    rails_cost_micro_usd: int = 0
    """Cost of those calls, apart from `cost_micro_usd` (the main call)."""
    trace_id: str = ""
    """W3C trace id (32 hex) of the call: the client's `traceparent`, else a new one."""
    requested_model: str = ""
    """The model name the client sent."""
    upstream_model: str = ""
    """The model name sent to the provider."""
    cached_tokens: int = 0
    """Prompt tokens the provider served from its cache (`prompt_tokens_details`)."""
    reasoning_tokens: int = 0
    """Completion tokens spent on reasoning (`completion_tokens_details`)."""
    estimated: bool = False
    """The provider reported no usage although it was called and the call was answered
    or left by its client (status < 400 or 499): `prompt_tokens` is the gateway's
    pre-call estimate (`gateway.limits.tokens`), `completion_tokens` is 0, and the cost
    is priced from those."""
    upstream_ms: float | None = None
    """Time spent in the upstream call (to the end of the stream); None if never called."""
    overhead_ms: float = 0.0
    """What the gateway added: `latency_ms - upstream_ms` (all of it if never called)."""
    blocked: bool = False
    """A rail blocked the prompt or the answer."""
    guard_actions: dict[str, int] | None = None
    """Rail findings counted by `<guard>.<action>` (e.g. `pii.redacted: 2`); counts only."""


class UsageTotals(msgspec.Struct, frozen=True):
    """The sums of one group of records (`group` is a day, model, key id or end user)."""

    group: str | None
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_micro_usd: int = 0
    errors: int = 0
    blocked: int = 0
    limited: int = 0
    disconnected: int = 0


METRICS: tuple[str, ...] = tuple(f for f in UsageTotals.__struct_fields__ if f != "group")
"""Aggregate counters, in the order `metric_values` returns them."""


class Retention(msgspec.Struct, frozen=True):
    """How long the ledger keeps things (seconds)."""

    records_s: int = 30 * 86400
    """Raw records (the log) and their dedupe markers."""
    totals_s: int = 400 * 86400
    """Day aggregates, counted from the end of their day."""


DEFAULT_RETENTION = Retention()


_DAY = 86400
_combo = msgspec.json.Encoder()
_combo_dec = msgspec.json.Decoder(tuple[str, str, str | None])


def entry_id(record: UsageRecord) -> str:
    """The record's identity in the ledger (see the module docstring)."""
    return f"{record.request_id}@{int(record.timestamp * 1_000_000)}"


def day_of(timestamp: float) -> dt.date:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).date()


def day_end(day: dt.date) -> int:
    """Unix time at which `day` (UTC) ends."""
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) + _DAY


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from `first` to `last`, both included."""
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def group_field(record: UsageRecord) -> str:
    """The aggregate group of a record: (model, key id, end user) as compact JSON."""
    return _combo.encode((record.model, record.key_id, record.user)).decode()


def metric_values(record: UsageRecord) -> tuple[int, ...]:
    """What the record adds to each of `METRICS`."""
    return (
        1,
        record.prompt_tokens,
        record.completion_tokens,
        record.cached_tokens,
        record.reasoning_tokens,
        record.cost_micro_usd + record.rails_cost_micro_usd,
        int(record.status >= 400),
        int(record.blocked),
        int(record.status == 429),
        int(record.status == 499),
    )


def sum_fields(
    days: Iterable[tuple[dt.date, dict[str, int]]], group_by: GroupBy
) -> list[UsageTotals]:
    """Sum stored day counters (`<metric>:<group field>` → value) by `group_by`, ordered
    by group (no group, i.e. calls without an end user, first)."""
    sums: dict[str | None, dict[str, int]] = {}
    for day, fields in days:
        for name, value in fields.items():
            metric, _, combo = name.partition(":")
            if group_by == "day":
                group: str | None = day.isoformat()
            else:
                model, key, user = _combo_dec.decode(combo)
                group = model if group_by == "model" else key if group_by == "key" else user
            row = sums.setdefault(group, {})
            row[metric] = row.get(metric, 0) + value
    ordered = sorted(sums, key=lambda g: (g is not None, g or ""))
    return [UsageTotals(group=g, **sums[g]) for g in ordered]


def anonymous_field(name: str, user: str) -> str | None:
    """For a day counter of end user `user` (`<metric>:<group field>`), the same counter
    of the same model and key without an end user; None for any other counter."""
    metric, _, group = name.partition(":")
    model, key_id, named = _combo_dec.decode(group)
    if named != user:
        return None
    return f"{metric}:{_combo.encode((model, key_id, None)).decode()}"
