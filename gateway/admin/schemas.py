"""Request and response bodies of the admin API (Litestar derives the OpenAPI schema).

Request bodies refuse unknown fields. In `…Update` bodies a field left out keeps its
value and `null` clears it. No response carries a key's hash; only `KeyCreated` carries
a secret, once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from gateway.config import LangfuseSettings, TenantId
from gateway.ledger.records import GroupBy, UsageRecord
from gateway.limits.spec import Limits, ModelLimits
from gateway.pricing import ModelPrice
from gateway.store.base import AuditEntry
from rails.base import Stage
from rails.policy import Role

__all__ = [
    "ActivePolicy",
    "AuditPage",
    "DryRunMessage",
    "DryRunRequest",
    "DryRunResult",
    "FindingCount",
    "KeyCreate",
    "KeyCreated",
    "KeyList",
    "KeyOut",
    "KeyRotate",
    "KeyRotated",
    "KeyStatus",
    "KeyUpdate",
    "PolicyVersionInfo",
    "PolicyVersionOut",
    "PolicyVersions",
    "RailsConfigInfo",
    "RailsConfigList",
    "RailsConfigOut",
    "RailsConfigUpload",
    "Rollback",
    "SubjectErasure",
    "SubjectExport",
    "TenantCreate",
    "TenantOut",
    "TenantPage",
    "TenantUpdate",
    "UsageReport",
    "UsageRow",
    "Verdict",
]

Name = Annotated[str, Meta(max_length=200)]
Labels = Annotated[dict[str, Annotated[str, Meta(max_length=1000)]], Meta(max_length=64)]
Timestamp = Annotated[float, Meta(ge=0, le=32_503_680_000)]
"""Unix seconds, at most the year 3000."""
Source = Literal["config", "store"]
KeyStatus = Literal["active", "revoked", "expired"]


# -- tenants -------------------------------------------------------------------------


class TenantCreate(msgspec.Struct, forbid_unknown_fields=True):
    id: TenantId
    name: Name = ""
    models: list[str] | None = None
    """Models the tenant may call (configured model names); null: every model."""
    limits: Limits | None = None
    """Rate limits and budgets of the whole tenant."""
    model_limits: dict[str, ModelLimits] | None = None
    prices: dict[str, ModelPrice] | None = None
    langfuse: LangfuseSettings | None = None
    """The tenant's own Langfuse project (key variables name the environment)."""
    metadata: Labels | None = None


class TenantUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | UnsetType = UNSET
    models: list[str] | UnsetType | None = UNSET
    limits: Limits | UnsetType | None = UNSET
    model_limits: dict[str, ModelLimits] | UnsetType | None = UNSET
    prices: dict[str, ModelPrice] | UnsetType | None = UNSET
    langfuse: LangfuseSettings | UnsetType | None = UNSET
    metadata: Labels | UnsetType | None = UNSET


class TenantOut(msgspec.Struct):
    id: str
    name: str
    source: Source
    """`config`: defined in the config file, read-only here; `store`: made through the API."""
    disabled: bool
    models: list[str] | None
    limits: Limits | None
    model_limits: dict[str, ModelLimits] | None
    prices: dict[str, ModelPrice] | None
    langfuse: LangfuseSettings | None
    metadata: dict[str, str] | None
    policy_version: int | None
    """The active version of the tenant's policy in the store; null: the config's policy."""
    created_at: float
    updated_at: float


class TenantPage(msgspec.Struct):
    data: list[TenantOut]
    next_cursor: str | None
    """Pass as `cursor` for the next page; null on the last page."""


# -- keys ----------------------------------------------------------------------------


class KeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name = ""
    expires_at: Timestamp | None = None
    """Unix seconds, in the future; null: never."""
    limits: Limits | None = None
    """The key's own limits, on top of its tenant's."""


class KeyUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | UnsetType = UNSET
    expires_at: Timestamp | UnsetType | None = UNSET
    limits: Limits | UnsetType | None = UNSET


class KeyOut(msgspec.Struct):
    id: str
    tenant_id: str
    name: str
    prefix: str
    """First characters of the secret."""
    status: KeyStatus
    created_at: float
    last_used_at: float | None
    expires_at: float | None
    revoked_at: float | None
    limits: Limits | None
    replaced_by: str | None
    """Id of the key that replaced this one in a rotation."""


class KeyCreated(KeyOut):
    key: str
    """The secret: shown in this response only, never again."""


class KeyList(msgspec.Struct):
    data: list[KeyOut]


class KeyRotate(msgspec.Struct, forbid_unknown_fields=True):
    grace_seconds: Annotated[int, Meta(ge=0, le=30 * 86400)] = 3600
    """How long the old key keeps working (0: it stops now)."""


class KeyRotated(msgspec.Struct):
    key: KeyCreated
    """The new key, with its secret (shown once)."""
    old: KeyOut
    """The old key, now expiring at the end of the grace period."""


# -- policies ------------------------------------------------------------------------


class ActivePolicy(msgspec.Struct):
    tenant_id: str
    source: Literal["store", "config", "default"]
    """`store`: a version set through the API; `config`: the tenant's policy in the
    config file; `default`: the config's `default_policy` (or no rails)."""
    version: int | None
    document: dict[str, Any]


class PolicyVersionInfo(msgspec.Struct):
    version: int
    created_at: float
    author: str
    active: bool


class PolicyVersionOut(PolicyVersionInfo):
    tenant_id: str
    document: dict[str, Any]


class PolicyVersions(msgspec.Struct):
    tenant_id: str
    data: list[PolicyVersionInfo]


class Rollback(msgspec.Struct, forbid_unknown_fields=True):
    version: Annotated[int, Meta(ge=1)]


class DryRunMessage(msgspec.Struct, forbid_unknown_fields=True):
    role: Role
    content: Annotated[str, Meta(max_length=1_000_000)]


class DryRunRequest(msgspec.Struct, forbid_unknown_fields=True):
    messages: Annotated[list[DryRunMessage], Meta(max_length=256)] = []
    """The prompt, as chat messages, for the input stage."""
    answer: Annotated[str, Meta(max_length=1_000_000)] | None = None
    """An answer for the output stage (runs after the input stage, which it may refer to)."""
    tenant: str | None = None
    """Run this tenant's active policy (unless `policy` is given)."""
    policy: dict[str, Any] | None = None
    """A policy document to try; at least one of `tenant` and `policy` is needed."""


class FindingCount(msgspec.Struct):
    stage: Stage
    guard: str
    entity: str
    action: str
    count: int


class Verdict(msgspec.Struct):
    outcome: Literal["allowed", "blocked", "failed"]
    """`failed`: a guard errored and its policy says `on_error: block` (a 503 live)."""
    stage: Stage | None = None
    guard: str | None = None
    reason: str | None = None


class DryRunResult(msgspec.Struct):
    policy_source: Literal["request", "store", "config", "default"]
    messages: list[DryRunMessage]
    """The messages as the provider would receive them (as given when the input stage
    blocked)."""
    answer: str | None
    """The answer as the user would receive it (null without an answer, or when blocked)."""
    findings: list[FindingCount]
    """What the guards found, counted; never the values themselves."""
    verdict: Verdict


# -- NeMo rails configs --------------------------------------------------------------


class RailsConfigUpload(msgspec.Struct, forbid_unknown_fields=True):
    files: dict[str, str]
    """File name → text: `config.yml` (required), Colang 1.0 `*.co`, more `*.yml` /
    `*.yaml`, notes `*.md`; never Python. At most 64 files, 256 KiB together."""


class RailsConfigInfo(msgspec.Struct):
    name: str
    version: int
    created_at: float
    author: str
    """Admin key id that uploaded it."""
    file_names: list[str]


class RailsConfigOut(RailsConfigInfo):
    files: dict[str, str]
    """File name → text, as uploaded."""


class RailsConfigList(msgspec.Struct):
    data: list[RailsConfigInfo]
    """The latest version of every stored config, by name (bundled ones are not listed)."""


# -- usage, data subjects, audit -----------------------------------------------------


class UsageRow(msgspec.Struct):
    group: str | None
    """The day, model, key id or end user (null: calls without an end user, or the total)."""
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_micro_usd: int
    cost_usd: float
    errors: int
    blocked: int
    limited: int
    disconnected: int


class UsageReport(msgspec.Struct):
    tenant: str
    from_: str = msgspec.field(name="from")
    to: str
    group_by: GroupBy
    data: list[UsageRow]
    total: UsageRow


class SubjectExport(msgspec.Struct):
    tenant: str
    user: str
    count: int
    records: list[UsageRecord]
    """Every retained usage record naming the end user."""


class SubjectErasure(msgspec.Struct):
    tenant: str
    erased: dict[str, int]
    """Records removed, by kind (`usage_records`)."""


class AuditPage(msgspec.Struct):
    data: list[AuditEntry]
    """Newest first."""
    next_before: float | None
    """Pass as `before` for older entries; null when there are none."""
