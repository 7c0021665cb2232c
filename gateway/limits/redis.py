"""Limits in Redis: five Lua scripts, loaded once and run with `EVALSHA`.

Every script touches the keys of one hash tag (`{tenant}` or `{provider:<name>}`), so
each call is atomic across replicas and lands on one Redis Cluster slot. Calls made
at the same moment by concurrent requests share one round trip (`batch.py`).
Time comes from the Redis server (`TIME`), never from the replicas' clocks.

A window is a sorted set of `<amount>:<ticket>` entries scored by time; a window of
tokens also keeps the sum of its amounts beside it, a window of requests (one unit per
entry) needs none: its count is the set's size, which halves its commands per admission
(admission ~60 -> ~53 µs of Redis CPU for the bench's five rules).

A rule list is encoded once (its keys and one `spec` string) and reused for every
request that has the same list; per request only the ticket and the token count go
over the wire. An admission or booking that Redis carries out after its caller gave up
(deadline passed, client gone) is undone as soon as its late answer arrives.
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
from gateway.limits.rules import TOKENS, PaceVerdict, Rule, Verdict

__all__ = ["RedisLimits"]

_KIND = {"window": "w", "lease": "l", "budget": "b"}


def _kind(rule: Rule) -> str:
    """The scripts' code for a rule: `r` for a window of requests (one unit each, no sum
    kept: its count is the zset's size), `w` for other windows (tokens)."""
    if rule.kind == "window" and rule.unit == "requests" and rule.amount == 1:
        return "r"
    return _KIND[rule.kind]


_PACE_REFUSALS = {1: "wait", 2: "never", 3: "share"}
_MAX_ENCODED = 2048
"""Encoded rule lists kept; the limiter renews its lists every second, so this is ample."""


def _script(name: str) -> str:
    lua = resources.files("gateway.limits").joinpath("lua")
    return lua.joinpath("common.lua").read_text() + "\n" + lua.joinpath(name).read_text()


class RedisLimits:
    def __init__(
        self, client: Redis | RedisCluster, prefix: str, batch: AutoPipeline | None = None
    ) -> None:
        self._prefix = prefix + ":"
        self._batch = batch or AutoPipeline(client)
        self._admit = client.register_script(_script("admit.lua"))
        self._settle = client.register_script(_script("settle.lua"))
        self._renew = client.register_script(_script("renew.lua"))
        self._pace = client.register_script(_script("pace.lua"))
        self._tighten = client.register_script(_script("tighten.lua"))
        self._encoded: dict[int, tuple[Sequence[Rule], list[str], str]] = {}

    @property
    def deadline_s(self) -> float:
        return self._batch.deadline_s

    @deadline_s.setter
    def deadline_s(self, value: float) -> None:
        self._batch.deadline_s = value

    def _keys(self, rule: Rule) -> list[str]:
        key = self._prefix + rule.key
        return [key, key + ":n"] if rule.kind == "window" else [key]

    def _encode(self, rules: Sequence[Rule], pace: bool) -> tuple[list[str], str]:
        """(keys, spec) of a rule list; tuples (immutable) are cached by identity, the
        entry pinning the tuple so its id cannot be reused."""
        found = self._encoded.get(id(rules))
        if found is not None and found[0] is rules:
            return found[1], found[2]
        keys = [k for rule in rules for k in self._keys(rule)]
        if pace:
            spec = " ".join(f"{r.limit} {r.window_ms} {r.amount}" for r in rules)
        else:
            spec = " ".join(f"{_kind(r)} {r.limit} {r.window_ms} {r.amount}" for r in rules)
        if isinstance(rules, tuple):
            if len(self._encoded) >= _MAX_ENCODED:
                self._encoded.clear()
            self._encoded[id(rules)] = (rules, keys, spec)
        return keys, spec

    async def admit(self, ticket: str, rules: Sequence[Rule], tokens: int = 0) -> Verdict:
        keys, spec = self._encode(rules, pace=False)

        def undo(out: Any) -> None:
            if int(out[0]) == 0:
                released = [(r, 0) for r in rules if r.kind != "budget"]
                self._batch.send(self._settle, *self._settle_args(ticket, released, tokens))

        out = await self._batch.call(self._admit, keys, [ticket, tokens, spec], undo)
        out = [int(x) for x in out]
        if out[0]:
            return Verdict(refused=rules[out[0] - 1], retry_ms=out[1], used=(out[2],))
        return Verdict(refused=None, retry_ms=0, used=tuple(out[2::2]), reset_ms=tuple(out[3::2]))

    def _settle_args(
        self, ticket: str, items: Sequence[Settlement], tokens: int
    ) -> tuple[list[str], list[Any]]:
        keys: list[str] = []
        args: list[Any] = [ticket]
        for rule, actual in items:
            keys += self._keys(rule)
            reserved = tokens if rule.amount == TOKENS else rule.amount
            args += (_kind(rule), reserved, actual, max(rule.window_ms, 1))
        return keys, args

    async def settle(self, ticket: str, items: Sequence[Settlement], tokens: int = 0) -> None:
        await self._batch.call(
            self._settle, *self._settle_args(ticket, items, tokens), urgent=False
        )

    async def renew(self, key: str, tickets: Sequence[str], ttl_ms: int) -> None:
        await self._batch.call(self._renew, [self._prefix + key], [ttl_ms, *tickets], urgent=False)

    async def pace(
        self, member: str, rules: Sequence[Rule], block_key: str, max_wait_ms: int, tokens: int = 0
    ) -> PaceVerdict:
        keys, spec = self._encode(rules, pace=True)

        def undo(out: Any) -> None:
            if int(out[0]) == 0:
                released = [(r, 0) for r in rules]
                self._batch.send(self._settle, *self._settle_args(member, released, tokens))

        out = await self._batch.call(
            self._pace, [*keys, self._prefix + block_key], [member, max_wait_ms, tokens, spec], undo
        )
        status, wait = (int(x) for x in out)
        return PaceVerdict(wait_ms=wait, refused=_PACE_REFUSALS.get(status))  # type: ignore[arg-type]

    async def tighten(
        self, rules: Sequence[tuple[Rule, int]], block_key: str, block_ms: int
    ) -> None:
        keys: list[str] = []
        args: list[Any] = [f"~{os.urandom(6).hex()}", block_ms]
        for rule, remaining in rules:
            keys += self._keys(rule)
            args += (rule.limit, rule.window_ms, remaining)
        await self._batch.call(self._tighten, [*keys, self._prefix + block_key], args, urgent=False)
