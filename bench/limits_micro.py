"""Micro-benchmark of the limiter's own CPU per request (no gateway, no network).

    python bench/limits_micro.py [--n 20000] [--backlog 0,10000,100000]

Runs `StoreLimiter.admit` + `settle` for a chat request of a tenant with every kind of
limit (budget, rpm, tpm, concurrency, model rpm), first with `backlog` entries already
in the tenant's windows, and prints the CPU microseconds per admit+settle. With the
memory store (`memory://`) the cost must not grow with the backlog (a settlement once
scanned the window: ~1 ms per request at 20,000 entries). The Redis backend is measured
through the gateway (`run.py --limits`): one call at a time its cost is dominated by the
kernel's loopback send, not by the limiter.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Coroutine
from typing import Any

from gateway.call import Call
from gateway.config import parse_settings
from gateway.limits.backend import LimitBackend
from gateway.limits.limiter import StoreLimiter
from gateway.limits.memory import MemoryLimits
from gateway.limits.spec import LimiterSettings, Limits, ModelLimits
from gateway.metrics import Counters
from gateway.providers.registry import ModelRouter, build_providers
from gateway.schemas import Usage, parse_request
from gateway.store.base import ApiKey, Tenant
from gateway.telemetry.tracecontext import trace_context
from gateway.tenancy import Caller

BODY = (
    b'{"model":"m","messages":[{"role":"system","content":"You are a helpful assistant."},'
    b'{"role":"user","content":"' + b"x" * 800 + b'"}]}'
)
LIMITS = Limits(rpm=10**9, tpm=10**11, concurrency=10_000, budget_usd_day=1e6)


async def measure(backend: LimitBackend, n: int, backlog: int) -> float:
    settings = parse_settings(
        {
            "providers": [{"name": "mock", "type": "mock"}],
            "models": [{"name": "m", "provider": "mock"}],
        },
        {},
    )
    route = ModelRouter(settings, build_providers(settings)).resolve("m")
    tenant = Tenant(id=f"bench{backlog}", limits=LIMITS, model_limits={"m": ModelLimits(rpm=10**9)})
    caller = Caller(tenant, ApiKey(id="k", tenant_id=tenant.id, key_sha256="x"))
    tasks: set[asyncio.Task[Any]] = set()

    def spawn(coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    limiter = StoreLimiter(backend, LimiterSettings(), {}, Counters(), spawn)

    async def one() -> None:
        request = parse_request("chat/completions", BODY)
        call = Call(
            request_id="r", caller=caller, route=route, request=request, trace=trace_context({})
        )
        ticket = await limiter.admit(call)
        call.usage = Usage(prompt_tokens=231, completion_tokens=14, total_tokens=245)
        await limiter.settle(ticket, call)

    for _ in range(backlog):
        await one()
    started = time.process_time()
    for _ in range(n):
        await one()
    await limiter.close()
    return (time.process_time() - started) / n * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--backlog", default="0,10000,100000")
    args = parser.parse_args()
    for backlog in (int(b) for b in args.backlog.split(",")):
        us = await measure(MemoryLimits(), args.n, backlog)
        print(f"memory  backlog {backlog:>7,}: {us:6.1f} us CPU per admit+settle")


if __name__ == "__main__":
    asyncio.run(main())
