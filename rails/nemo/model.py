"""The rails model: how NeMo's LLM calls reach a provider through the gateway.

NeMo asks its `LLMModel` for completions (self-check prompts, topical checks). Ours,
`RailsModel`, forwards each call to a `RailsLLM` that the gateway provides (its own
provider adapters: same keys, same upstreams, same telemetry), tags it with the guard
context of the request being checked, and records its tokens in `ctx.model_calls` so
the call's usage record shows rails usage apart from the main call.

The request's context travels in a `ContextVar` set by the guard around each NeMo call;
NeMo's own tasks copy it when they are created, so concurrent requests never mix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from nemoguardrails.types import ChatMessage, LLMResponse, LLMResponseChunk, UsageInfo

from rails.base import GuardContext, ModelCall

__all__ = ["RailsLLM", "RailsModel", "checking"]

_CURRENT: ContextVar[GuardContext | None] = ContextVar("railgate_rails_ctx", default=None)


class RailsLLM(Protocol):
    """What the gateway provides: one chat completion for a rail, attributed to `ctx`."""

    model: str
    """Name of the rails model (a model of the gateway's `models` list)."""

    async def complete(
        self,
        messages: list[dict[str, str]],
        ctx: GuardContext,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
    ) -> tuple[str, ModelCall]:
        """The answer text and what the call cost in tokens; raises on failure."""
        ...


@contextmanager
def checking(ctx: GuardContext) -> Iterator[None]:
    """Run NeMo inside this block so its model calls are attributed to `ctx`."""
    token = _CURRENT.set(ctx)
    try:
        yield
    finally:
        _CURRENT.reset(token)


class RailsModel:
    """NeMo's `LLMModel` protocol on top of a `RailsLLM`.

    Args:
        llm: the gateway's rails model; None when none is configured, in which case a
            config that needs a model fails the call (its `on_error` decides).
        guard: guard name recorded on each `ModelCall`.
    """

    provider_name = "railgate"
    provider_url = None

    def __init__(self, llm: RailsLLM | None, guard: str = "nemo") -> None:
        self._llm = llm
        self._guard = guard

    @property
    def model_name(self) -> str:
        return self._llm.model if self._llm is not None else "none"

    async def generate_async(
        self, prompt: str | list[ChatMessage], *, stop: list[str] | None = None, **kwargs: Any
    ) -> LLMResponse:
        ctx = _CURRENT.get()
        if self._llm is None or ctx is None:
            raise RuntimeError("no rails model is configured (set `rails_model`)")
        answer, call = await self._llm.complete(
            _messages(prompt),
            ctx,
            max_tokens=_int(kwargs.get("max_tokens")),
            temperature=_float(kwargs.get("temperature")),
            stop=stop,
        )
        ctx.model_calls.append(call)
        usage = UsageInfo(
            input_tokens=call.prompt_tokens,
            output_tokens=call.completion_tokens,
            total_tokens=call.prompt_tokens + call.completion_tokens,
        )
        return LLMResponse(content=answer, model=call.model, usage=usage)

    async def stream_async(
        self, prompt: str | list[ChatMessage], *, stop: list[str] | None = None, **kwargs: Any
    ) -> AsyncIterator[LLMResponseChunk]:
        """Rails never stream their own checks; one chunk with the whole answer."""
        response = await self.generate_async(prompt, stop=stop, **kwargs)
        yield LLMResponseChunk(delta_content=response.content, usage=response.usage)


def _messages(prompt: str | list[ChatMessage]) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    out = []
    for message in prompt:
        content = message.content
        if isinstance(content, list):  # parts: keep the text ones
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        out.append({"role": str(message.role.value), "content": content or ""})
    return out


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
