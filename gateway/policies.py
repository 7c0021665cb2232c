"""Which rails policy applies to which tenant.

Policies come from the config file (a tenant's `policy`, else `default_policy`) and are
parsed once at start; every pipeline they need is built then too, so heavy engines
(Presidio) are ready before the first request. A tenant's active policy version in the
store (set through the admin API) wins over the file: `reload()` reads them whenever
the store's change counter moves (`gateway.reload`), builds their pipelines off the
event loop, then swaps them in at once; a request sees the old policy or the new one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path

from gateway.config import ConfigError, Settings
from gateway.errors import GatewayError
from gateway.providers.registry import ModelRouter
from gateway.rails_llm import GatewayRailsLLM
from gateway.store.base import Store
from rails import GuardPipeline, GuardRegistry, Policy, parse_policy
from rails.policy import DEFAULT_POLICY

__all__ = ["TenantPolicies", "guard_registry", "rails_secret"]

log = logging.getLogger("railgate")

SECRET_ENV = "RAILGATE_SECRET"


def guard_registry(
    settings: Settings, router: ModelRouter, stored_configs: Path | None = None
) -> GuardRegistry:
    """The process's guard registry; LLM-based rails call `rails.model` via `router`.
    NeMo configs are looked up bundled first, then in `rails.configs_dir`, then in
    `stored_configs` (the admin API's configs on local disk, `gateway.rails_configs`)."""
    rails = settings.rails
    llm = None
    if rails.model is not None:
        try:
            llm = GatewayRailsLLM(router, rails.model, rails.model_timeout_ms / 1000)
        except GatewayError:
            raise ConfigError("$.rails.model", f"unknown model {rails.model!r}") from None
    dirs = [d for d in (rails.configs_dir, stored_configs) if d is not None]
    return GuardRegistry(nlp_model=settings.nlp_model, rails_llm=llm, rails_configs_dirs=dirs)


class TenantPolicies:
    """Raises `ConfigError` (with the policy's path) when a policy cannot be built, e.g.
    a PII entity no recognizer knows; the schema itself was checked by `load_settings`."""

    def __init__(self, settings: Settings, registry: GuardRegistry) -> None:
        self._registry = registry
        self._default = (
            parse_policy(settings.default_policy) if settings.default_policy else DEFAULT_POLICY
        )
        self._by_tenant = {t.id: parse_policy(t.policy) for t in settings.tenants if t.policy}
        self._stored: dict[str, tuple[int, Policy]] = {}
        """Tenant id → (version, policy) of its active policy in the store."""
        self._building = threading.Lock()
        """Pipelines are built on worker threads (reloads, warm-up), one at a time."""
        self._build("$.default_policy", self._default)
        for i, tenant in enumerate(settings.tenants):
            if tenant.id in self._by_tenant:
                self._build(f"$.tenants[{i}].policy", self._by_tenant[tenant.id])

    def _build(self, at: str, policy: Policy) -> None:
        try:
            pipeline = self._registry.pipeline(policy)
        except ValueError as exc:
            raise ConfigError(at, str(exc)) from exc
        if pipeline.has_output and not pipeline.stream_capable:
            log.warning(
                "%s: output rails %s cannot stream; streamed calls get 400",
                at,
                pipeline.unstreamable,
            )

    @property
    def uses_pii(self) -> bool:
        """Some policy runs the PII guard (so hashes and pseudonyms need the secret)."""
        policies = (self._default, *self._by_tenant.values())
        return any(spec.kind == "pii" for p in policies for spec in (*p.input, *p.output))

    def for_tenant(self, tenant_id: str) -> Policy:
        stored = self._stored.get(tenant_id)
        if stored is not None:
            return stored[1]
        return self._by_tenant.get(tenant_id, self._default)

    def file_policy(self, tenant_id: str) -> Policy:
        """The policy the config file gives a tenant (its own, else the default)."""
        return self._by_tenant.get(tenant_id, self._default)

    async def reload(self, store: Store, tenant_ids: list[str]) -> None:
        """Take every tenant's active policy version from the store; a version that
        cannot be built (it was valid when accepted) keeps the tenant's previous one."""
        stored: dict[str, tuple[int, Policy]] = {}
        for tenant_id in tenant_ids:
            active = await store.active_policy(tenant_id)
            if active is None:
                continue
            known = self._stored.get(tenant_id)
            if known is not None and known[0] == active.version:
                stored[tenant_id] = known
                continue
            try:
                policy = parse_policy(active.document)
                await asyncio.to_thread(self._build_pipeline, policy)
            except ValueError as exc:
                log.error(
                    "tenant %s policy version %d cannot be built (%s); keeping the previous one",
                    tenant_id,
                    active.version,
                    type(exc).__name__,
                )
                if known is not None:
                    stored[tenant_id] = known
                continue
            stored[tenant_id] = (active.version, policy)
        self._stored = stored

    def pipeline(self, policy: Policy) -> GuardPipeline:
        return self._registry.pipeline(policy)

    def _build_pipeline(self, policy: Policy) -> GuardPipeline:
        with self._building:
            return self._registry.pipeline(policy)

    def warm(self) -> None:
        """Build the PII engine now (on a worker thread, after start-up): the first PII
        policy set through the admin API then takes effect within the reload interval
        instead of after the engine's one-off build (1-2 s)."""
        started = time.perf_counter()
        self._build_pipeline(parse_policy({"input": [{"pii": {}}]}))
        log.info("rails engines ready in %.1f s", time.perf_counter() - started)


def rails_secret(*, needed: bool = True) -> bytes:
    """The key behind per-tenant hashes and pseudonyms, from `RAILGATE_SECRET`.

    Without it a random key is drawn per process: pseudonyms then change on restart and
    differ between replicas, which breaks multi-turn consistency, so say so once.
    """
    value = os.environ.get(SECRET_ENV, "")
    if value:
        return value.encode()
    if needed:
        log.warning(
            "%s is not set: PII pseudonyms and hashes will not survive a restart", SECRET_ENV
        )
    return os.urandom(32)
