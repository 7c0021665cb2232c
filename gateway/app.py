"""`create_app(settings)`: the Litestar application and everything it owns.

Objects are built once here (store, providers, router, proxy) and reach handlers
through `app.state`; the lifespan opens the providers' connection pools inside the
event loop and closes them, the store and pending background work on shutdown.
Seams (limiter, content stages, usage sink) can be injected; by default the limiter
keeps its counters in the store, the content stages run each tenant's rails policy and
usage records go to the store's ledger (`LedgerSink`, flushed on shutdown).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components

from gateway.admin import routes as admin_routes
from gateway.admin.auth import SECURITY_SCHEMES, AdminKeys
from gateway.config import Settings
from gateway.content import RailStages
from gateway.errors import exception_handlers
from gateway.frontdoor import FrontDoor
from gateway.guards import ContentStages
from gateway.ledger.sink import LedgerSink
from gateway.limits.limiter import StoreLimiter
from gateway.metrics import Counters
from gateway.policies import TenantPolicies, guard_registry, rails_secret
from gateway.providers.registry import ModelRouter, build_providers
from gateway.proxy import Proxy
from gateway.rails_configs import ConfigMirror, mirror_root
from gateway.ratelimit import Limiter
from gateway.reload import Reloader
from gateway.routes import health, metrics, openai
from gateway.store import Store, open_store
from gateway.tasks import Tasks
from gateway.telemetry.setup import build_telemetry
from gateway.tenancy import Authenticator
from gateway.usage import UsageSink
from rails import GuardRegistry

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

__all__ = ["asgi_app", "create_app"]

log = logging.getLogger("railgate")


GC_THRESHOLDS = (50_000, 20, 100)
"""Young-generation collection after 50,000 net new container objects (default 700).
Each in-flight request holds a few hundred live containers (parsed bodies, guard
state), so at 32 concurrent calls the default collected every ~11 requests, each
time walking every in-flight request's objects: 25-45 us of CPU per request
(measured with `gc.callbacks`, PII guard on/off). With 50,000 a collection runs only
when cyclic garbage piles up, which bounds the extra memory to ~50,000 objects."""


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    limiter: Limiter | None = None,
    stages: ContentStages | None = None,
    sink: UsageSink | None = None,
    env: Mapping[str, str] | None = None,
    span_processors: Sequence[SpanProcessor] = (),
    warm_rails: bool = False,
) -> Litestar:
    """Build the app. Pass `store` to share one already opened (the CLI's demo bootstrap);
    `env` replaces `os.environ` for the `OTEL_*` and Langfuse key variables;
    `span_processors` (OpenTelemetry SDK) get every span besides the configured exporters;
    `warm_rails` (servers, not tests) builds the PII engine in the background after start."""
    store = store or open_store(settings.store)
    providers = build_providers(settings)
    router = ModelRouter(settings, providers)
    registry: GuardRegistry | None = None
    policies: TenantPolicies | None = None
    rails_configs: ConfigMirror | None = None
    if stages is None:
        configs_root = mirror_root()
        registry = guard_registry(settings, router, configs_root)
        rails_configs = ConfigMirror(configs_root, registry)
        policies = TenantPolicies(settings, registry)
        secret = rails_secret(needed=policies.uses_pii)
        stages = RailStages(policies.for_tenant, policies.pipeline, secret)
    tasks = Tasks()
    counters = Counters()
    if limiter is None:
        paced = {
            p.name: p.limits
            for p in settings.providers
            if p.limits and (p.limits.rpm or p.limits.tpm)
        }
        store_limiter = StoreLimiter(store.limits, settings.limiter, paced, counters, tasks.spawn)
        for name in paced:
            providers[name].watch(partial(store_limiter.observe, name))
        limiter = store_limiter
    ledger: LedgerSink | None = None
    if sink is None:
        sink = ledger = LedgerSink(store.ledger, settings.ledger, counters)
    auth = Authenticator(settings, store, tasks.spawn)
    reloader = Reloader(store, auth, policies, rails_configs)
    telemetry, exporters = build_telemetry(settings, counters, env, span_processors)
    proxy = Proxy(
        auth=auth,
        router=router,
        limiter=limiter,
        stages=stages,
        sink=sink,
        tasks=tasks,
        max_body_bytes=settings.server.max_body_bytes,
        telemetry=telemetry,
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        for provider in providers.values():
            await provider.start()
        if ledger is not None:
            ledger.start()
        for exporter in exporters:
            exporter.start()
        await reloader.start()
        if warm_rails and policies is not None:
            tasks.spawn(asyncio.to_thread(policies.warm))
        # Everything built so far lives as long as the process: move it out of the
        # collector's sight so full collections stay short under load (p99 latency).
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            yield
        finally:
            await reloader.close()
            await tasks.drain()
            telemetry.flush()  # the last calls' spans, before the exporters send them
            if ledger is not None:  # after the drain: the last calls' records are buffered
                await ledger.close()
            for exporter in exporters:  # bounded: a dead collector cannot hold shutdown up
                await exporter.close()
            await limiter.close()
            if registry is not None:
                registry.close()
            if rails_configs is not None:
                rails_configs.close()
            for provider in providers.values():
                await provider.close()
            await store.close()

    return Litestar(
        route_handlers=[*openai.routes, *health.routes, *metrics.routes, *admin_routes],
        lifespan=[lifespan],
        exception_handlers=exception_handlers,
        request_max_body_size=settings.server.max_body_bytes,
        logging_config=None,  # logging belongs to `gateway.telemetry.logs`
        openapi_config=OpenAPIConfig(
            title="Railgate",
            version="0.1.0",
            path="/openapi",
            components=Components(security_schemes=SECURITY_SCHEMES),
        ),
        state=State(
            {
                "settings": settings,
                "store": store,
                "proxy": proxy,
                "counters": counters,
                "registry": registry,
                "policies": policies,
                "reloader": reloader,
                "rails_configs": rails_configs,
                "admin_keys": AdminKeys(settings.admin, os.environ if env is None else env),
            }
        ),
        debug=False,
    )


def asgi_app(app: Litestar) -> FrontDoor:
    """The ASGI callable to serve: the front door (request ids, the proxy routes) before `app`."""
    proxy: Proxy = app.state.proxy
    return FrontDoor(app, proxy)
