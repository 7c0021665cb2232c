"""The `nemo` guard: a tenant's NeMo Guardrails input and output rails on proxied calls.

The provider, not NeMo, writes the answer; NeMo only judges (and may rewrite) it:

- input stage: `check_async(messages, rail_types=[INPUT])` on the outgoing messages
  (after the guards before it, so a `pii` guard first means NeMo and its model only
  ever see redacted text). BLOCKED raises `Blocked`; MODIFIED replaces the last user
  message.
- output stage: `check_async([user, assistant], rail_types=[OUTPUT])` per answer text.
- streams: NeMo's streaming output rails (`stream_async(generator=…)`) over the
  answer's text deltas, `stream_first` off: text is released only after the window
  holding it passed every output rail, and a violation raises `Blocked` (the gateway
  ends the stream with `finish_reason: content_filter` and an error event).

The guard awaits (rails may call the rails model), so the pipeline's per-guard
deadline applies; a timeout or error follows the policy's `on_error`.

Fast path: when every rail of a stage is a flow that executes one action and acts on
its `RailOutcome` (the shape NeMo's library rails and our bundled configs have, and the
shape NeMo's own streaming output path requires), the guard calls those actions
directly through NeMo's action dispatcher, the way `stream_async` does, instead of
running the Colang runtime (~10 ms per check here, mostly flow-state bookkeeping). Any
other config goes through `check_async`. A test runs both paths on the bundled configs
and expects the same verdicts.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from rails.base import Blocked, Finding, GuardContext, Stage
from rails.nemo.model import checking
from rails.nemo.options import NemoOptions

if TYPE_CHECKING:
    from nemoguardrails import LLMRails

    from rails.nemo.engine import NemoEngine

__all__ = ["NemoGuard", "RailError"]

_USER = "nemo.user_message"
"""`ctx.scratch` key: the last user message as the input stage left it."""
_END = None
_INTERNAL = "an internal error has occurred"
"""What NeMo's runtime answers when a rail's action raised (it reports a BLOCKED)."""


class RailError(RuntimeError):
    """A rail failed to run (its action raised, its model call failed)."""


class NemoGuard:
    """`TextGuard` (with the conversation-wide `check_all`) and `StreamGuard`.

    Args:
        engine: the process-wide NeMo engine; the config is loaded and built here.
        options: the policy entry.
        shadow: report only (the pipeline discards rewrites and turns blocks into
            `reported` findings).
    """

    name = "nemo"

    def __init__(self, engine: NemoEngine, options: NemoOptions, *, shadow: bool = False) -> None:
        self.options = options
        self.shadow = shadow
        self.rails: LLMRails = engine.rails(options)
        flows = self.rails.config.rails
        self.has_input = bool(flows.input.flows)
        self.has_output = bool(flows.output.flows)
        self.parallel = options.mode == "parallel"
        self.direct: dict[Stage, list[tuple[str, str, dict[str, Any]]] | None] = {
            "input": _direct_actions(self.rails, flows.input.flows),
            "output": _direct_actions(self.rails, flows.output.flows),
        }
        """Per stage: (flow id, action, params) of each rail, or None (use the runtime)."""

    async def check(self, text: str, stage: Stage, ctx: GuardContext) -> str:
        role = "user" if stage == "input" else "assistant"
        return (await self.check_all([text], [role], stage, ctx))[0]

    async def check_all(
        self, texts: list[str], roles: list[str], stage: Stage, ctx: GuardContext
    ) -> list[str]:
        """Check the texts of one stage of a call together (NeMo judges conversations)."""
        if stage == "input":
            return await self._input(texts, roles, ctx)
        out = list(texts)
        if not self.has_output:
            return out
        user = str(ctx.scratch.get(_USER, ""))
        for i, text in enumerate(texts):
            if not text.strip():
                continue
            messages = [{"role": "user", "content": user}, {"role": "assistant", "content": text}]
            out[i] = await self._check(messages, "output", text, ctx)
        return out

    async def _input(self, texts: list[str], roles: list[str], ctx: GuardContext) -> list[str]:
        out = list(texts)
        users = [i for i, r in enumerate(roles) if r == "user"]
        if users:
            ctx.scratch[_USER] = texts[users[-1]]
        if not self.has_input or not users:
            return out
        messages = [
            {"role": r if r in ("user", "assistant", "system") else "user", "content": t}
            for t, r in zip(texts, roles, strict=True)
            if r in ("user", "assistant", "system", "developer")
        ]
        last = users[-1]
        out[last] = await self._check(messages, "input", texts[last], ctx)
        ctx.scratch[_USER] = out[last]
        return out

    async def _check(
        self, messages: list[dict[str, str]], stage: Stage, text: str, ctx: GuardContext
    ) -> str:
        from nemoguardrails.rails.llm.options import RailStatus, RailType

        kind = RailType.INPUT if stage == "input" else RailType.OUTPUT
        actions = self.direct[stage]
        with checking(ctx):
            try:
                if actions is not None:
                    status, content, rail = await self._run_actions(actions, messages, stage)
                else:
                    result = await self.rails.check_async(messages, rail_types=[kind])
                    status, content, rail = result.status, result.content, result.rail
                    if status == RailStatus.BLOCKED and _INTERNAL in str(content):
                        raise RailError(f"rail {rail} failed")  # NeMo reports it as a block
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise RailError(type(exc).__name__) from exc
        if status == RailStatus.BLOCKED:
            rail = str(rail or "rails")
            ctx.findings.append(Finding(self.name, _rule(rail), 0, len(text), 1.0, "blocked"))
            noun = "prompt" if stage == "input" else "answer"
            raise Blocked(self.name, f"The {noun} was stopped by a content rail.")
        if status == RailStatus.MODIFIED:
            if self.parallel:  # already sent: a parallel rail cannot rewrite
                raise RailError("a parallel rail tried to rewrite the prompt")
            ctx.findings.append(Finding(self.name, "modified", 0, len(text), 1.0, "modified"))
            return str(content)
        return text

    async def _run_actions(
        self,
        actions: list[tuple[str, str, dict[str, Any]]],
        messages: list[dict[str, str]],
        stage: Stage,
    ) -> tuple[Any, str, str | None]:
        """The fast path: each rail's action in order, as NeMo's streaming path runs
        them; returns (status, final text, blocking rail)."""
        from nemoguardrails.actions.rail_outcome import require_rail_outcome
        from nemoguardrails.rails.llm.options import RailStatus

        rails = self.rails
        runtime = rails.runtime
        user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        bot = messages[-1]["content"] if stage == "output" else ""
        target = "user_message" if stage == "input" else "bot_message"
        original = user if stage == "input" else bot
        shared = runtime.registered_action_params
        for flow_id, action, action_params in actions:
            context = {"user_message": user, "bot_message": bot, f"triggered_{stage}_rail": flow_id}
            values = {"user_message": user, "bot_message": bot}
            params = {
                "context": context,
                "llm_task_manager": runtime.llm_task_manager,
                "config": rails.config,
                "llms": shared.get("llms", {}),
                "llm": shared.get(f"{action}_llm", rails.llm),
                "events": [],
                **{k: _resolve(v, values) for k, v in action_params.items()},
            }
            result, state = await runtime.action_dispatcher.execute_action(action, params)
            if state != "success":
                raise RailError(f"action {action} {state}")
            outcome = require_rail_outcome(result)
            if outcome.is_blocked:
                return RailStatus.BLOCKED, original, flow_id
            if outcome.is_transform:
                new = outcome.transform_text.get(target)
                if new is not None:
                    if stage == "input":
                        user = new
                    else:
                        bot = new
        final = user if stage == "input" else bot
        status = RailStatus.MODIFIED if final != original else RailStatus.PASSED
        return status, final, None

    def open_stream(self, ctx: GuardContext) -> NemoStreamFilter:
        return NemoStreamFilter(self.rails if self.has_output else None, ctx)


class NemoStreamFilter:
    """NeMo's streaming output rails over one choice's text deltas.

    `feed` hands the delta to NeMo and returns what NeMo has released so far (text of
    windows that passed); `flush` ends NeMo's input and waits for the rest. NeMo runs
    in a task of its own, cancelled when this filter is dropped (client gone).
    """

    def __init__(self, rails: LLMRails | None, ctx: GuardContext) -> None:
        self._rails = rails
        self._ctx = ctx
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._state = _StreamState()
        self._task: asyncio.Task[None] | None = None

    async def feed(self, text: str) -> str:
        if self._rails is None:
            return text
        if self._task is None:
            self._start()
        self._queue.put_nowait(text)
        await asyncio.sleep(0)  # let NeMo take it in (and release checked windows)
        return self._take()

    async def flush(self) -> str:
        if self._rails is None or self._task is None:
            return ""
        self._queue.put_nowait(_END)
        await self._task
        return self._take()

    def _start(self) -> None:
        assert self._rails is not None
        user = str(self._ctx.scratch.get(_USER, ""))
        with checking(self._ctx):  # the task copies the context: rails calls count here
            self._task = asyncio.get_running_loop().create_task(
                _consume(self._rails, user, self._queue, self._state)
            )
        weakref.finalize(self, self._task.cancel)

    def _take(self) -> str:
        state = self._state
        if state.blocked is not None:
            rail = state.blocked
            state.blocked = None
            self._ctx.findings.append(Finding("nemo", _rule(rail), 0, 0, 1.0, "blocked"))
            raise Blocked("nemo", "The answer was stopped by a content rail.")
        if state.failed is not None:
            raise RailError(state.failed)
        out = "".join(state.released)
        state.released.clear()
        return out


class _StreamState:
    __slots__ = ("blocked", "failed", "released")

    def __init__(self) -> None:
        self.released: list[str] = []
        self.blocked: str | None = None
        self.failed: str | None = None


async def _consume(
    rails: LLMRails, user: str, queue: asyncio.Queue[str | None], state: _StreamState
) -> None:
    """Drive NeMo's streaming output rails; no reference to the filter (see finalize)."""

    async def upstream() -> AsyncIterator[str]:
        while (item := await queue.get()) is not _END:
            assert item is not None
            yield item

    try:
        stream = rails.stream_async(
            messages=[{"role": "user", "content": user}], generator=upstream()
        )
        async for chunk in stream:
            error = _error_of(chunk)
            if error is None:
                state.released.append(str(chunk))
            elif error.get("code") == "content_blocked":
                state.blocked = str(error.get("param") or "output rails")
                return
            else:
                state.failed = str(error.get("code") or "rail_execution_failure")
                return
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        state.failed = type(exc).__name__


def _direct_actions(
    rails: LLMRails, flow_ids: list[str]
) -> list[tuple[str, str, dict[str, Any]]] | None:
    """(flow id, action name, action params) for each rail if every one is a single
    `execute <action>` flow of the config's own or NeMo's library `.co` files, else None."""
    from nemoguardrails.rails.llm.utils import get_action_details_from_flow_id

    if not flow_ids:
        return None
    out = []
    for flow_id in flow_ids:
        try:
            action, params = get_action_details_from_flow_id(flow_id, rails.config.flows)
        except ValueError:
            return None
        out.append((flow_id, str(action), dict(params or {})))
    return out


def _resolve(value: Any, values: dict[str, str]) -> Any:
    """`$user_message` / `$bot_message` in an action's parameters, as NeMo resolves them."""
    if isinstance(value, str) and value.startswith("$"):
        return values.get(value[1:], value)
    return value


def _error_of(chunk: Any) -> dict[str, Any] | None:
    """NeMo's in-band error chunk: a JSON object string `{"error": {...}}`."""
    if not isinstance(chunk, str) or not chunk.startswith('{"error"'):
        return None
    try:
        parsed = json.loads(chunk)
    except ValueError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, dict) and "code" in error else None


def _rule(rail: str) -> str:
    """A finding's entity from a rail name: `self check input` → `self_check_input`."""
    return "_".join(rail.split()) or "rails"
