"""Limits in Redis: five Lua scripts, loaded once and run with `EVALSHA`.

Every script touches the keys of one hash tag (`{tenant}` or `{provider:<name>}`), so
each call is atomic across replicas and lands on one Redis Cluster slot. Calls made
at the same moment by concurrent requests share one round trip (`batch.py`).
Time comes from the Redis server (`TIME`), never from the replicas' clocks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from gateway.limits.backend import Settlement
from gateway.limits.batch import AutoPipeline
from gateway.limits.rules import PaceVerdict, Rule, Verdict

__all__ = ["RedisLimits"]

_KIND = {"window": "w", "lease": "l", "budget": "b"}
_PACE_REFUSALS = {1: "wait", 2: "never", 3: "share"}


def _script(name: str) -> str:
    lua = resources.files("gateway.limits").joinpath("lua")
    return lua.joinpath("common.lua").read_text() + "\n" + lua.joinpath(name).read_text()


class RedisLimits:
    def __init__(self, client: Redis | RedisCluster, prefix: str) -> None:
        self._prefix = prefix + ":"
        self._batch = AutoPipeline(client)
        self._admit = client.register_script(_script("admit.lua"))
        self._settle = client.register_script(_script("settle.lua"))
        self._renew = client.register_script(_script("renew.lua"))
        self._pace = client.register_script(_script("pace.lua"))
        self._tighten = client.register_script(_script("tighten.lua"))

    def _keys(self, rule: Rule) -> list[str]:
        key = self._prefix + rule.key
        return [key, key + ":n"] if rule.kind == "window" else [key]

    async def admit(self, ticket: str, rules: Sequence[Rule]) -> Verdict:
        keys: list[str] = []
        args: list[Any] = [ticket]
        for rule in rules:
            keys += self._keys(rule)
            args += (_KIND[rule.kind], rule.limit, rule.window_ms, rule.amount)
        out = [int(x) for x in await self._batch.call(self._admit, keys, args)]
        if out[0]:
            return Verdict(refused=rules[out[0] - 1], retry_ms=out[1], used=(out[2],))
        return Verdict(refused=None, retry_ms=0, used=tuple(out[2::2]), reset_ms=tuple(out[3::2]))

    async def settle(self, ticket: str, items: Sequence[Settlement]) -> None:
        keys: list[str] = []
        args: list[Any] = [ticket]
        for rule, actual in items:
            keys += self._keys(rule)
            args += (_KIND[rule.kind], rule.amount, actual, max(rule.window_ms, 1))
        await self._batch.call(self._settle, keys, args)

    async def renew(self, key: str, tickets: Sequence[str], ttl_ms: int) -> None:
        await self._batch.call(self._renew, [self._prefix + key], [ttl_ms, *tickets])

    async def pace(
        self, member: str, rules: Sequence[Rule], block_key: str, max_wait_ms: int
    ) -> PaceVerdict:
        keys: list[str] = []
        args: list[Any] = [member, max_wait_ms]
        for rule in rules:
            keys += self._keys(rule)
            args += (rule.limit, rule.window_ms, rule.amount)
        status, wait = (
            int(x)
            for x in await self._batch.call(self._pace, [*keys, self._prefix + block_key], args)
        )
        return PaceVerdict(wait_ms=wait, refused=_PACE_REFUSALS.get(status))  # type: ignore[arg-type]

    async def tighten(
        self, rules: Sequence[tuple[Rule, int]], block_key: str, block_ms: int
    ) -> None:
        keys: list[str] = []
        args: list[Any] = [f"~{os.urandom(6).hex()}", block_ms]
        for rule, remaining in rules:
            keys += self._keys(rule)
            args += (rule.limit, rule.window_ms, remaining)
        await self._batch.call(self._tighten, [*keys, self._prefix + block_key], args)
