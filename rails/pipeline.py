"""GuardPipeline: runs a policy's guards per stage, in order, under its failure policy.

One pipeline per tenant policy, built once by `rails.registry.GuardRegistry` and shared
by every request of that policy; all per-request state lives in the `GuardContext`.

    input   guard 1 → guard 2 → …                      (what the provider will see)
    output  guard 1 → guard 2 → … → pseudonym restore  (what the user will receive)

Each slot adds its own policy around a guard:

- `timeout_s`: one deadline for the guard's pass over all texts of a stage (`run`), so
  a call's latency is bounded whatever its number of messages. Guards that never await
  (`inline = True`, like `pii` and `denylist`) get none: they cannot be interrupted.
  Stream filters get no deadline from the slot: one that only computes is bounded by
  its window, one that awaits (a guard that calls a model) by a timeout of its own.
- `on_error`: a guard that raises (anything but `Blocked`) or times out either fails the
  call (`block`, the default: fail closed → `GuardFailed`, a 503) or is skipped (`allow`:
  logged with the guard name and exception type, counted in `errors`, texts unchanged).
- `shadow`: the guard runs and reports, but its text is discarded, `Blocked` becomes a
  finding with action `reported`, its errors never fail the call, and whatever it put in
  the vault is taken back. A tenant trials a policy on live traffic this way.

A skipped or shadowed guard leaves no trace in the context except `reported` findings and
its time in `timings_ms`. Guards must not block the event loop: `asyncio.timeout` can only
interrupt a guard at an `await`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar, cast

import msgspec

from rails.base import (
    Blocked,
    ConversationGuard,
    Finding,
    GuardContext,
    GuardFailed,
    Stage,
    StreamFilter,
    StreamGuard,
    TextGuard,
)

__all__ = ["ErrorCounts", "GuardPipeline", "GuardSlot", "OnError", "Restorer"]

OnError = Literal["allow", "block"]
ErrorCounts = Counter[tuple[str, str]]
"""(guard name, `timeout` | `error`) → failures seen; the gateway exports it as a metric."""

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class GuardSlot:
    """A guard as placed in a policy stage, with the policy around it."""

    guard: TextGuard
    shadow: bool = False
    """Report only: never change a text, never block, never fail the call."""
    on_error: OnError = "block"
    """What an error or a timeout of this guard does to the call."""
    timeout_s: float | None = 1.0
    """Deadline for this guard's pass over the texts of one stage; None: no deadline.
    Not armed for an `inline` guard (one that never awaits): nothing could interrupt it."""
    plain: bool = field(init=False, repr=False, compare=False)
    """The guard checks text by text (`check`), not whole conversations (`check_all`)."""

    def __post_init__(self) -> None:
        # getattr, not isinstance: a runtime Protocol check costs ~11 us (done once here).
        object.__setattr__(self, "plain", getattr(self.guard, "check_all", None) is None)

    @property
    def parallel(self) -> bool:
        """The guard only judges and may run while the upstream call is on its way."""
        return bool(getattr(self.guard, "parallel", False))

    @property
    def deadline_s(self) -> float | None:
        """The deadline actually armed around the guard."""
        return None if getattr(self.guard, "inline", False) else self.timeout_s


class Restorer(Protocol):
    """Puts pseudonymized values back (`rails.pii`); runs after every output guard."""

    def restore(self, text: str, vault: dict[str, str]) -> str: ...

    def open_stream(self, vault: dict[str, str]) -> StreamFilter: ...


class GuardPipeline:
    """The guards of one policy, per stage, with their failure policy.

    Args:
        input: slots run in order on every text going to the provider.
        output: slots run in order on every text of the answer.
        restorer: restores pseudonym placeholders from `ctx.vault` after the output
            slots; the registry passes one when the policy uses a pseudonymizing kind.
        errors: where guard failures are counted (shared across pipelines).
    """

    def __init__(
        self,
        input: Sequence[GuardSlot] = (),
        output: Sequence[GuardSlot] = (),
        *,
        restorer: Restorer | None = None,
        errors: ErrorCounts | None = None,
    ) -> None:
        for slot in (*input, *output):
            if not isinstance(slot.guard, TextGuard):
                raise TypeError(f"{slot.guard!r} is not a TextGuard")
        if any(slot.parallel for slot in output):
            raise ValueError("mode: parallel is for input rails only")
        self.input: tuple[GuardSlot, ...] = tuple(s for s in input if not s.parallel)
        self.parallel: tuple[GuardSlot, ...] = tuple(s for s in input if s.parallel)
        """Input slots that judge concurrently with the upstream call (`run_parallel`)."""
        self.output: tuple[GuardSlot, ...] = tuple(output)
        self.restorer = restorer
        self.errors: ErrorCounts = Counter() if errors is None else errors
        self.unstreamable: tuple[str, ...] = tuple(
            s.guard.name for s in self.output if not isinstance(s.guard, StreamGuard)
        )
        """Names of output guards that cannot check a streamed answer."""

    @property
    def stream_capable(self) -> bool:
        """Every output guard can check a streamed answer; else refuse `stream: true`."""
        return not self.unstreamable

    @property
    def has_input(self) -> bool:
        """The input stage does something; when False the gateway may skip it."""
        return bool(self.input or self.parallel)

    @property
    def has_output(self) -> bool:
        """The output stage may do something (guards, or restoring pseudonyms)."""
        return bool(self.output) or self.restorer is not None

    async def run(
        self,
        stage: Stage,
        texts: list[str],
        ctx: GuardContext,
        roles: list[str] | None = None,
    ) -> list[str]:
        """Check the texts of one stage of a call; returns them, possibly rewritten.

        Called once per stage with every text of the request (`input`, before the
        upstream call) or of the complete answer (`output`, before the client sees it).
        `roles` gives each text's message role for guards that judge conversations
        (default: `user` on input, `assistant` on output). Each guard sees the previous
        guard's output. Raises `Blocked` (reject the call) or `GuardFailed` (a guard
        failed and its policy is `on_error: block`).
        """
        if stage == "input":
            slots = self.input
        elif stage == "output":
            slots = self.output
        else:
            raise ValueError(f"unknown stage {stage!r}")
        out = list(texts)
        if roles is None:
            roles = [("user" if stage == "input" else "assistant")] * len(out)
        elif len(roles) != len(out):
            raise ValueError("one role per text")
        for slot in slots:
            out = await self._run_slot(slot, stage, out, roles, ctx)
        if stage == "output" and ctx.vault and self.restorer is not None:
            restore = self.restorer.restore
            out = _restoring("restore", lambda: [restore(t, ctx.vault) for t in out])
        return out

    async def run_parallel(self, texts: list[str], roles: list[str], ctx: GuardContext) -> None:
        """The parallel input slots on the final input texts (what was sent); raises
        `Blocked` or `GuardFailed` like `run`. A rewrite cannot apply any more: the
        guard itself must treat one as an error."""
        for slot in self.parallel:
            await self._run_slot(slot, "input", texts, roles, ctx)

    def open_stream(self, ctx: GuardContext) -> StreamFilter | None:
        """Filter for one choice of a streamed answer; None when there is nothing to do.

        Called after the input stage (which fills the vault) when the answer starts.
        The output guards' filters are chained in order, then pseudonym restore.
        `feed`/`flush` raise `Blocked` or `GuardFailed` like `run`.
        """
        if self.unstreamable:
            raise TypeError(f"output guards cannot stream: {', '.join(self.unstreamable)}")
        filters: list[StreamFilter] = []
        for slot in self.output:
            try:
                inner = cast(StreamGuard, slot.guard).open_stream(ctx)
            except Exception as exc:
                _fail(slot, exc, False, ctx, self.errors)
                continue
            filters.append(_SlotFilter(slot, inner, ctx, self.errors))
        if ctx.vault and self.restorer is not None:
            filters.append(_RestoreGuarded(self.restorer.open_stream(ctx.vault)))
        if not filters:
            return None
        return filters[0] if len(filters) == 1 else _Chain(filters)

    async def _run_slot(
        self, slot: GuardSlot, stage: Stage, texts: list[str], roles: list[str], ctx: GuardContext
    ) -> list[str]:
        mark = len(ctx.findings)
        vault = dict(ctx.vault) if slot.shadow or slot.on_error == "allow" else None
        limit = slot.deadline_s
        deadline = asyncio.timeout(limit) if limit is not None else None
        started = time.perf_counter()
        try:
            if deadline is None and not slot.shadow and slot.plain:
                # The usual slot (an inline guard, e.g. `pii`): straight to its checks.
                check = slot.guard.check
                result = [await check(text, stage, ctx) for text in texts]
            else:
                async with deadline or contextlib.nullcontext():
                    result = await self._run_guard(slot, texts, roles, stage, ctx)
        except Blocked:
            raise
        except Exception as exc:
            _fail(slot, exc, deadline is not None and deadline.expired(), ctx, self.errors)
            _take_back(ctx, mark, vault)
            return texts
        finally:
            _add_time(ctx, slot.guard.name, started)
        if slot.shadow:
            _as_reported(ctx, mark)
            _take_back(ctx, len(ctx.findings), vault)
            return texts
        return result

    async def _run_guard(
        self, slot: GuardSlot, texts: list[str], roles: list[str], stage: Stage, ctx: GuardContext
    ) -> list[str]:
        if not slot.plain:
            guard = cast(ConversationGuard, slot.guard)
            return await self._check_all(slot, guard, texts, roles, stage, ctx)
        return [await self._check(slot, text, stage, ctx) for text in texts]

    @staticmethod
    async def _check_all(
        slot: GuardSlot,
        guard: ConversationGuard,
        texts: list[str],
        roles: list[str],
        stage: Stage,
        ctx: GuardContext,
    ) -> list[str]:
        if not slot.shadow:
            result = await guard.check_all(list(texts), roles, stage, ctx)
            if len(result) != len(texts):
                raise ValueError(f"guard {slot.guard.name} returned {len(result)} texts")
            return result
        mark = len(ctx.findings)
        try:
            await guard.check_all(list(texts), roles, stage, ctx)
        except Blocked as exc:
            _report_block(ctx, mark, slot.guard.name, exc, sum(map(len, texts)))
        return texts

    @staticmethod
    async def _check(slot: GuardSlot, text: str, stage: Stage, ctx: GuardContext) -> str:
        if not slot.shadow:
            return await slot.guard.check(text, stage, ctx)
        mark = len(ctx.findings)
        try:
            await slot.guard.check(text, stage, ctx)
        except Blocked as exc:
            _report_block(ctx, mark, slot.guard.name, exc, len(text))
        return text


class _SlotFilter:
    """One output guard's stream filter under its slot's shadow / on_error policy."""

    __slots__ = ("_ctx", "_dead", "_errors", "_inner", "_slot")

    def __init__(
        self, slot: GuardSlot, inner: StreamFilter, ctx: GuardContext, errors: ErrorCounts
    ) -> None:
        self._slot, self._inner, self._ctx, self._errors = slot, inner, ctx, errors
        self._dead = False

    async def feed(self, text: str) -> str:
        return await self._call(self._inner.feed, text, text)

    async def flush(self) -> str:
        return await self._call(lambda _: self._inner.flush(), "", "")

    async def _call(
        self, step: Callable[[str], Awaitable[str]], text: str, passthrough: str
    ) -> str:
        if self._dead:
            return passthrough
        slot, ctx = self._slot, self._ctx
        mark = len(ctx.findings)
        started = time.perf_counter()
        try:
            out = await step(text)
        except Blocked as exc:
            if not slot.shadow:
                raise
            _report_block(ctx, mark, slot.guard.name, exc, len(text))
            self._dead = True
            return passthrough
        except Exception as exc:
            # Text this filter was holding back is lost; the stream goes on unchecked.
            _fail(slot, exc, False, ctx, self._errors)
            self._dead = True
            return passthrough
        finally:
            _add_time(ctx, slot.guard.name, started)
        if slot.shadow:
            _as_reported(ctx, mark)
            return passthrough
        return out


class _Chain:
    """Filter k's output is filter k+1's input; flush cascades in order."""

    __slots__ = ("_filters",)

    def __init__(self, filters: list[StreamFilter]) -> None:
        self._filters = filters

    async def feed(self, text: str) -> str:
        for f in self._filters:
            if not text:
                return ""
            text = await f.feed(text)
        return text

    async def flush(self) -> str:
        carry = ""
        for f in self._filters:
            carry = (await f.feed(carry) if carry else "") + await f.flush()
        return carry


class _RestoreGuarded:
    """Restore filter whose unexpected errors surface as `GuardFailed`."""

    __slots__ = ("_inner",)

    def __init__(self, inner: StreamFilter) -> None:
        self._inner = inner

    async def feed(self, text: str) -> str:
        return await _restoring_async("restore", lambda: self._inner.feed(text))

    async def flush(self) -> str:
        return await _restoring_async("restore", self._inner.flush)


def _restoring(name: str, step: Callable[[], _T]) -> _T:
    try:
        return step()
    except Exception as exc:
        _log.error("guard %s failed: %s", name, type(exc).__name__)
        raise GuardFailed(name, type(exc).__name__) from exc


async def _restoring_async(name: str, step: Callable[[], Awaitable[_T]]) -> _T:
    """`_restoring` for the stream path, whose steps are coroutines."""
    try:
        return await step()
    except Exception as exc:
        _log.error("guard %s failed: %s", name, type(exc).__name__)
        raise GuardFailed(name, type(exc).__name__) from exc


def _fail(
    slot: GuardSlot, exc: Exception, timed_out: bool, ctx: GuardContext, errors: ErrorCounts
) -> None:
    """Count and log a failed guard; raise `GuardFailed` unless it may be skipped."""
    name = slot.guard.name
    kind = "timeout" if timed_out else "error"
    reason = f"timed out after {slot.timeout_s:g} s" if timed_out else type(exc).__name__
    errors[(name, kind)] += 1
    if slot.shadow or slot.on_error == "allow":
        _log.warning("guard %s skipped (%s), request %s", name, reason, ctx.request_id)
        return
    _log.error("guard %s failed (%s), request %s", name, reason, ctx.request_id)
    raise GuardFailed(name, reason) from exc


def _report_block(ctx: GuardContext, mark: int, guard: str, exc: Blocked, length: int) -> None:
    """Shadow mode: a block becomes `reported` findings (one for the whole text if the
    guard recorded none)."""
    if len(ctx.findings) == mark:
        ctx.findings.append(Finding(guard, exc.code, 0, length, 1.0, "reported"))
    _as_reported(ctx, mark)


def _as_reported(ctx: GuardContext, mark: int) -> None:
    for i in range(mark, len(ctx.findings)):
        if ctx.findings[i].action != "reported":
            ctx.findings[i] = msgspec.structs.replace(ctx.findings[i], action="reported")


def _take_back(ctx: GuardContext, mark: int, vault: dict[str, str] | None) -> None:
    """Undo what a skipped guard left: findings after `mark` and new vault entries."""
    del ctx.findings[mark:]
    if vault is not None and vault != ctx.vault:
        ctx.vault.clear()
        ctx.vault.update(vault)


def _add_time(ctx: GuardContext, name: str, started: float) -> None:
    elapsed = (time.perf_counter() - started) * 1000.0
    ctx.timings_ms[name] = ctx.timings_ms.get(name, 0.0) + elapsed
