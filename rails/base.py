"""The guard interface: what a content guard is, what it sees and what it may say.

A guard checks one piece of text in one stage (`input`: what the provider will see;
`output`: what the user will receive) and either returns it unchanged, returns it
rewritten (recording `Finding`s in the context), or raises `Blocked`. Guards are
stateless singletons built once per process; everything about one request lives in
its `GuardContext` (findings, the pseudonym vault, timings) or in a `StreamFilter`.

Capabilities are split into small protocols (litestar's plugin style); the pipeline
picks guards out by type:

    TextGuard     check(text, stage, ctx) -> text       every guard has this
    StreamGuard   open_stream(ctx) -> StreamFilter       guards that can check streamed answers

No HTTP and no gateway imports here: the gateway turns `Blocked` into a 400
`content_filter` (or a refusal) and `GuardFailed` into a 503, and decides which texts
of a request or answer go through which stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import msgspec

__all__ = [
    "Blocked",
    "Finding",
    "GuardContext",
    "GuardFailed",
    "Stage",
    "StreamFilter",
    "StreamGuard",
    "TextGuard",
]

Stage = Literal["input", "output"]


class Finding(msgspec.Struct, frozen=True, gc=False):
    """Something a guard found. Never carries the matched text itself.

    A msgspec struct, not a frozen dataclass: created per entity on the hot path,
    where it is ~7x cheaper to build; `gc=False` as it only holds scalars."""

    guard: str
    """Guard name, e.g. `pii`."""
    entity: str
    """What was found, e.g. `EMAIL_ADDRESS`, or a rule name for non-PII guards."""
    start: int
    """Offset of the match in the text the guard was given."""
    end: int
    score: float
    action: str
    """What was done: `redacted`, `masked`, `hashed`, `pseudonymized`, `restored`,
    `blocked`, or `reported` (shadow mode: nothing was changed)."""


class Blocked(Exception):
    """Raised by a guard to reject the text; the message is a reason safe to show."""

    def __init__(self, guard: str, reason: str, *, code: str = "content_filter") -> None:
        super().__init__(reason)
        self.guard = guard
        self.reason = reason
        self.code = code


class GuardFailed(Exception):
    """A guard errored or timed out and its policy says `on_error: block`."""

    def __init__(self, guard: str, reason: str) -> None:
        super().__init__(f"{guard}: {reason}")
        self.guard = guard
        self.reason = reason


class ModelCall(msgspec.Struct, frozen=True, gc=False):
    """One model call a guard made for a request (e.g. a NeMo self-check prompt): the
    gateway prices it and reports it as rails usage, apart from the main call."""

    guard: str
    model: str
    """The gateway model that answered (the configured rails model)."""
    prompt_tokens: int
    completion_tokens: int
    cost_micro_usd: int = 0
    """Priced by whoever ran the call (the gateway knows its price table)."""


@dataclass(slots=True)
class GuardContext:
    """Per-request state shared by the guards of one call (input and output stages)."""

    tenant_id: str
    request_id: str
    model: str
    tenant_secret: bytes
    """Per-tenant key for keyed hashes (the `hash` action, stable pseudonyms)."""
    vault: dict[str, str] = field(default_factory=dict)
    """Pseudonym placeholder → original value, for this request only."""
    findings: list[Finding] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    """Guard name → milliseconds spent, summed over texts and stages."""
    model_calls: list[ModelCall] = field(default_factory=list)
    """Model calls made by guards for this request (rails usage)."""
    scratch: dict[str, object] = field(default_factory=dict)
    """Per-request state a guard keeps between stages, keyed `<guard>.<name>`."""


@runtime_checkable
class TextGuard(Protocol):
    """One check of one text. A guard whose `check` never awaits (CPU work only) may
    set a class attribute `inline = True`: the pipeline then runs it without arming a
    deadline, which could only fire at an `await` and so would cost time for nothing.

    A guard that judges a conversation rather than single texts (NeMo rails look at the
    last user message in its context) also implements `ConversationGuard.check_all`; the
    pipeline then calls that once per stage instead of `check` per text."""

    name: str

    async def check(self, text: str, stage: Stage, ctx: GuardContext) -> str:
        """Runs once per text of a request (`input`, before the upstream call) or of a
        complete answer (`output`, before the client sees it). Return `text` itself when
        nothing changes, the rewritten text otherwise (and append `Finding`s to `ctx`);
        raise `Blocked` to reject the whole call."""
        ...


class ConversationGuard(Protocol):
    async def check_all(
        self, texts: list[str], roles: list[str], stage: Stage, ctx: GuardContext
    ) -> list[str]:
        """All texts of a stage at once, in order, each with the role of the message it
        comes from (`user`, `system`, `assistant`, `tool`, …; answers are `assistant`).
        Returns the texts, possibly rewritten (same length); raises like `check`."""
        ...


class StreamFilter(Protocol):
    """Per-stream state for one choice of a streamed answer.

    `feed` and `flush` are coroutines so that a filter may await (a guard that calls a
    model); most only do CPU work and never suspend. Like `TextGuard.check`, they must
    not block the event loop. Calls on one filter are never concurrent: each is awaited
    before the next piece comes in."""

    async def feed(self, text: str) -> str:
        """Next piece of the answer in; the text that is now safe to emit (may be "").
        Holds back a bounded tail that a later piece could still change. May await
        (e.g. a guard that calls a model); may raise `Blocked`."""
        ...

    async def flush(self) -> str:
        """End of the answer: release (checked) whatever is still held back. May
        await, like `feed`; may raise `Blocked`."""
        ...


@runtime_checkable
class StreamGuard(Protocol):
    name: str

    def open_stream(self, ctx: GuardContext) -> StreamFilter:
        """Called once per choice of a streamed answer; the filter owns its state."""
        ...
