"""The `denylist` guard: block a text that contains a denied term or matches a pattern.

A tiny deterministic guard, useful on its own (competitor names, code words, internal
hostnames) and as the reference implementation of `TextGuard` + `StreamGuard`. Terms
match case-insensitively as whole words (`bad` does not match `badge`); patterns are
`regex` expressions run with a time limit, so a pathological pattern fails the guard
(and its `on_error` decides) instead of stalling the process.

In a stream the filter holds back a tail as long as the longest term (or `stream_window`
characters when there are patterns) and raises `Blocked` from `feed`/`flush` as soon as a
match is certain, so a denied term is never emitted, even when split across chunks.
Pattern matches longer than the window may be partly emitted before the block.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
import regex

from rails.base import Blocked, Finding, GuardContext, Stage, StreamFilter

__all__ = [
    "MAX_PATTERN_CHARS",
    "DenylistGuard",
    "DenylistOptions",
    "compile_pattern",
    "denylist_problems",
]

MAX_PATTERN_CHARS = 1000
"""Longest regular expression a tenant may configure."""
REGEX_TIMEOUT_S = 0.05
"""Time limit of one pattern search; exceeding it raises `TimeoutError` (a guard error)."""
_REASON = "The text contains denied content."

Term = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class DenylistOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Options of the `denylist` guard, as written in a tenant policy."""

    terms: tuple[Term, ...] = ()
    """Words or phrases, matched case-insensitively on word boundaries."""
    patterns: tuple[str, ...] = ()
    """Regular expressions (`regex` module syntax), matched as written."""
    stream_window: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 64
    """Characters held back in streams when there are patterns: the longest pattern
    match that is guaranteed never to be emitted."""


def compile_pattern(pattern: str, *, allow_empty: bool = False) -> regex.Pattern[str]:
    """Compile a tenant's regular expression; raises `ValueError` with a reason.

    Called at policy parse time (so a bad pattern is refused when saved) and when a
    guard is built. Rejects over-long patterns and, unless `allow_empty`, patterns that
    match the empty string (they would match every text).
    """
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"Pattern longer than {MAX_PATTERN_CHARS} characters")
    try:
        compiled = regex.compile(pattern)
    except regex.error as exc:
        raise ValueError(f"Invalid regular expression: {exc}") from None
    if not allow_empty and compiled.fullmatch("", timeout=REGEX_TIMEOUT_S) is not None:
        raise ValueError("Pattern matches the empty string")
    return compiled


def denylist_problems(options: DenylistOptions) -> list[tuple[str, str]]:
    """Parse-time checks beyond types: `(relative path, reason)` per problem."""
    problems: list[tuple[str, str]] = []
    if not options.terms and not options.patterns:
        problems.append(("", "Expected at least one term or pattern"))
    for i, term in enumerate(options.terms):
        if not term.strip():
            problems.append((f".terms[{i}]", "Term is blank"))
    for i, pattern in enumerate(options.patterns):
        try:
            compile_pattern(pattern)
        except ValueError as exc:
            problems.append((f".patterns[{i}]", str(exc)))
    return problems


class DenylistGuard:
    """Blocks texts containing a denied term or pattern, in both stages and in streams."""

    name = "denylist"
    inline = True  # CPU only: never awaits

    def __init__(self, options: DenylistOptions) -> None:
        terms = sorted({t.strip() for t in options.terms if t.strip()}, key=len, reverse=True)
        self._rules: list[tuple[str, regex.Pattern[str]]] = []
        if terms:
            alternation = "|".join(regex.escape(t) for t in terms)
            self._rules.append(
                ("term", regex.compile(rf"(?<!\w)(?:{alternation})(?!\w)", regex.IGNORECASE))
            )
        for i, pattern in enumerate(options.patterns):
            self._rules.append((f"pattern[{i}]", compile_pattern(pattern)))
        longest = max((len(t) for t in terms), default=0)
        self.window = max(longest, options.stream_window if options.patterns else 0)
        """Characters a stream filter holds back."""

    async def check(self, text: str, stage: Stage, ctx: GuardContext) -> str:
        """Any stage: return `text` unchanged, or raise `Blocked` on the first match."""
        self.scan(text, 0, ctx, final=True)
        return text

    def open_stream(self, ctx: GuardContext) -> StreamFilter:
        return _DenylistFilter(self, ctx)

    def scan(self, text: str, pos: int, ctx: GuardContext, *, final: bool, offset: int = 0) -> int:
        """Raise `Blocked` for a certain match starting at or after `pos`.

        Returns where the earliest undecided match starts (`len(text)` when none): a
        match reaching the end of a text that is not `final` could still change.
        `offset` is added to finding positions (a stream's buffer starts mid-answer).
        """
        undecided = len(text)
        for rule, pattern in self._rules:
            m = pattern.search(text, pos, timeout=REGEX_TIMEOUT_S)
            if m is None:
                continue
            if final or m.end() < len(text):
                start, end = offset + m.start(), offset + m.end()
                ctx.findings.append(Finding(self.name, rule, start, end, 1.0, "blocked"))
                raise Blocked(self.name, _REASON)
            undecided = min(undecided, m.start())
        return undecided


class _DenylistFilter:
    """Holds back `window` characters (and any undecided match) of the stream."""

    __slots__ = ("_ctx", "_guard", "_pending", "_seen", "_tail")

    def __init__(self, guard: DenylistGuard, ctx: GuardContext) -> None:
        self._guard, self._ctx = guard, ctx
        self._tail = ""
        """Already released text kept as look-behind context (at most `window` chars)."""
        self._pending = ""
        self._seen = 0
        """Stream offset of `_tail`'s first character, for finding positions."""

    async def feed(self, text: str) -> str:
        buf = self._tail + self._pending + text
        pos = len(self._tail)
        hold = self._guard.scan(buf, pos, self._ctx, final=False, offset=self._seen)
        cut = max(pos, min(len(buf) - self._guard.window, hold))
        return self._release(buf, pos, cut)

    async def flush(self) -> str:
        buf = self._tail + self._pending
        pos = len(self._tail)
        self._guard.scan(buf, pos, self._ctx, final=True, offset=self._seen)
        return self._release(buf, pos, len(buf))

    def _release(self, buf: str, pos: int, cut: int) -> str:
        out = buf[pos:cut]
        self._pending = buf[cut:]
        keep = buf[:cut][-self._guard.window :] if self._guard.window else ""
        self._seen += cut - len(keep)
        self._tail = keep
        return out
