"""What a tenant, a key, a model or a provider may use: the `limits:` blocks of the config.

The same structs are stored on tenants and keys (and served by the admin API), so a
limit reads the same wherever it is written. Every field is optional: a missing one
does not limit. A key's limits apply on top of its tenant's, so a key can only be
tighter than its tenant, never looser.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = ["FailMode", "LimiterSettings", "Limits", "ModelLimits", "ProviderLimits"]

FailMode = Literal["open", "closed"]
Count = Annotated[int, msgspec.Meta(ge=1, le=10**12)]
Usd = Annotated[float, msgspec.Meta(ge=0, le=10**9)]


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    rpm: Count | None = None
    """Requests per minute (sliding 60 s window)."""
    rps: Count | None = None
    """Requests per second (sliding 1 s window)."""
    tpm: Count | None = None
    """Tokens per minute: prompt estimate + max output reserved at admission, then reconciled."""
    concurrency: Count | None = None
    """Requests in flight at once (leases that expire if a replica dies)."""
    budget_usd_day: Usd | None = None
    """Spend per UTC day in USD (model prices; rails calls included)."""
    budget_usd_month: Usd | None = None
    """Spend per UTC calendar month in USD."""
    fail_mode: FailMode = "open"
    """When the store cannot be reached: `open` admits (and counts it), `closed` answers 503."""

    @property
    def empty(self) -> bool:
        return not any(
            v is not None
            for v in (
                self.rpm,
                self.rps,
                self.tpm,
                self.concurrency,
                self.budget_usd_day,
                self.budget_usd_month,
            )
        )


class ModelLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    rpm: Count | None = None
    """Requests per minute of one tenant on one model."""
    tpm: Count | None = None
    """Tokens per minute of one tenant on one model."""


class ProviderLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    rpm: Count | None = None
    """The provider account's requests per minute, enforced across replicas."""
    tpm: Count | None = None
    """The provider account's tokens per minute, enforced across replicas."""
    max_queue_wait_ms: Annotated[int, msgspec.Meta(ge=0, le=600_000)] = 10_000
    """How long a request may wait for the provider's window; beyond it: 429."""


class LimiterSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 250
    """Deadline of one limiter call to the store; beyond it the tenant's `fail_mode` applies."""
    retry_after_failure_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 1_000
    """After a store failure, skip the store this long (fail mode applies) before retrying."""
    lease_ttl_s: Annotated[float, msgspec.Meta(ge=0.5, le=3600)] = 30.0
    """Concurrency leases expire this long after their last renewal (a dead replica's leases
    come back by themselves); live leases are renewed every third of it."""
    default_max_tokens: Annotated[int, msgspec.Meta(ge=0)] = 1024
    """Output tokens reserved when a request names no `max_tokens`/`max_completion_tokens`."""
