"""Test helpers for guards and pipelines (cf. mitmproxy's `test.taddons`).

    ctx = make_ctx()
    guard = FakeGuard("a", rewrite={"secret": "[x]"})
    assert await guard.check("my secret", "input", ctx) == "my [x]"
    assert await feed_all(guard.open_stream(ctx), ["my sec", "ret"]) == "my [x]"

`FakeGuard` implements `TextGuard` and `StreamGuard` with behaviour chosen per test, so
pipeline tests need no real engine. Not for production use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import regex

from rails.base import Blocked, Finding, GuardContext, Stage, StreamFilter

__all__ = ["FakeGuard", "feed_all", "make_ctx", "splits"]


def make_ctx(
    *,
    tenant_id: str = "tenant-test",
    request_id: str = "req-test",
    model: str = "test-model",
    tenant_secret: bytes = b"test-tenant-secret-0123456789abcdef",
    vault: dict[str, str] | None = None,
) -> GuardContext:
    """A fresh per-request context; override any field by keyword."""
    return GuardContext(
        tenant_id=tenant_id,
        request_id=request_id,
        model=model,
        tenant_secret=tenant_secret,
        vault={} if vault is None else vault,
    )


async def feed_all(stream: StreamFilter, chunks: Iterable[str]) -> str:
    """Feed every chunk, then flush; returns everything the filter emitted."""
    out = [await stream.feed(chunk) for chunk in chunks]
    out.append(await stream.flush())
    return "".join(out)


def splits(text: str) -> list[list[str]]:
    """Every way to cut `text` in two chunks, plus one-character chunks: the
    cross-chunk cases a stream filter must survive."""
    cases = [[text[:i], text[i:]] for i in range(len(text) + 1)]
    cases.append(list(text))
    return cases


@dataclass
class FakeGuard:
    """A scriptable guard. Each `check` and stream piece appends to `calls` (and to a
    shared `journal`, to observe ordering across guards)."""

    name: str = "fake"
    rewrite: Mapping[str, str] = field(default_factory=dict)
    """Substring → replacement, applied in one left-to-right pass (longest key first);
    each replacement records a finding with `action`."""
    block_on: str | None = None
    """Raise `Blocked` when the text contains this substring."""
    error: Exception | None = None
    """Raise this from `check`, `feed` and `flush`."""
    delay_s: float = 0.0
    """`check` sleeps this long first (timeout tests)."""
    vault: Mapping[str, str] = field(default_factory=dict)
    """Entries `check` adds to `ctx.vault` (a pseudonymizing guard)."""
    action: str = "redacted"
    calls: list[str] = field(default_factory=list)
    journal: list[str] | None = None

    async def check(self, text: str, stage: Stage, ctx: GuardContext) -> str:
        self._note(f"{self.name}:{stage}:{text}")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        ctx.vault.update(self.vault)
        self._check_block(text, ctx, 0)
        out, _ = self._rewrite(text, len(text), ctx, 0)
        return out

    def open_stream(self, ctx: GuardContext) -> StreamFilter:
        return _FakeFilter(self, ctx)

    @property
    def window(self) -> int:
        """Characters a stream filter holds back: a key or `block_on` may straddle."""
        longest = max([len(k) for k in self.rewrite] + [len(self.block_on or "")])
        return max(longest - 1, 0)

    def _note(self, entry: str) -> None:
        self.calls.append(entry)
        if self.journal is not None:
            self.journal.append(entry)

    def _check_block(self, text: str, ctx: GuardContext, offset: int) -> None:
        if self.block_on and (at := text.find(self.block_on)) >= 0:
            start = offset + at
            ctx.findings.append(
                Finding(self.name, "FAKE", start, start + len(self.block_on), 1.0, "blocked")
            )
            raise Blocked(self.name, "fake block")

    def _rewrite(self, text: str, safe_end: int, ctx: GuardContext, offset: int) -> tuple[str, int]:
        """Replace keys starting before `safe_end`; returns (output, consumed length)."""
        if not self.rewrite:
            return text[:safe_end], safe_end
        keys = sorted(self.rewrite, key=len, reverse=True)
        pattern = regex.compile("|".join(regex.escape(k) for k in keys))
        out: list[str] = []
        pos = 0
        for m in pattern.finditer(text):
            if m.start() >= safe_end:
                break
            out += (text[pos : m.start()], self.rewrite[m.group()])
            ctx.findings.append(
                Finding(self.name, "FAKE", offset + m.start(), offset + m.end(), 1.0, self.action)
            )
            pos = m.end()
        cut = max(pos, safe_end)
        out.append(text[pos:cut])
        return "".join(out), cut


class _FakeFilter:
    def __init__(self, guard: FakeGuard, ctx: GuardContext) -> None:
        self._guard, self._ctx = guard, ctx
        self._held = ""
        self._offset = 0

    async def feed(self, text: str) -> str:
        self._guard._note(f"{self._guard.name}:feed:{text}")
        return self._step(self._held + text, final=False)

    async def flush(self) -> str:
        self._guard._note(f"{self._guard.name}:flush")
        return self._step(self._held, final=True)

    def _step(self, buf: str, *, final: bool) -> str:
        if self._guard.error is not None:
            raise self._guard.error
        self._guard._check_block(buf, self._ctx, self._offset)
        safe_end = len(buf) if final else max(0, len(buf) - self._guard.window)
        out, cut = self._guard._rewrite(buf, safe_end, self._ctx, self._offset)
        self._held = buf[cut:]
        self._offset += cut
        return out
