"""The gateway side of the rails: which texts of a call go through which stage.

`RailStages` implements the `guards.ContentStages` seam with the tenant's
`rails.GuardPipeline`:

- input (before the upstream call): the content of chat messages whose role the
  policy names (string contents and text parts), assistant tool-call arguments and
  tool results; `/v1/completions` prompts; `/v1/embeddings` inputs (strings only).
- output (complete answers): each choice's message content and tool-call arguments
  (`text` for completions). Pseudonym placeholders are restored last.
- streams: a `ChunkEdit` per call feeds each choice's `delta.content` and tool-call
  argument deltas to a `StreamFilter` of their own, which may hold back a bounded tail;
  held text is released in order and flushed on that choice's `finish_reason`. Other
  chunks and fields pass through untouched, behind held text.

A block on input is a 400 `content_filter` (or, with `on_block: refuse`, a normal answer
carrying the refusal). A block on a complete answer replaces that choice's content with
the refusal and sets `finish_reason: content_filter`. A block mid-stream cannot change
the HTTP status: the stream gets one final chunk with `finish_reason: content_filter`,
one OpenAI-shaped error event, and ends; nothing after the block reaches the client.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson

from gateway.call import Call
from gateway.errors import ContentBlocked, GuardUnavailable, InvalidRequest, error_body
from gateway.providers.base import UpstreamReply
from gateway.sse import data_of, encode
from rails import Blocked, GuardContext, GuardFailed, GuardPipeline, Policy, StreamFilter

__all__ = ["ChunkEdit", "RailStages"]

T = TypeVar("T")

# (container, key) of one text inside a parsed body, so a rewrite can be put back.
Slot = tuple[Any, Any]


class RailStages:
    """Runs each tenant's policy; `pipeline_for` and `policy_for` come from the registry."""

    def __init__(
        self,
        policy_for: Callable[[str], Policy],
        pipeline_for: Callable[[Policy], GuardPipeline],
        secret: bytes,
    ) -> None:
        self._policy_for = policy_for
        self._pipeline_for = pipeline_for
        self._secret = secret
        self._tenant_keys: dict[str, bytes] = {}

    def _tenant_key(self, tenant: str) -> bytes:
        key = self._tenant_keys.get(tenant)
        if key is None:
            key = hmac.new(self._secret, tenant.encode(), hashlib.sha256).digest()
            self._tenant_keys[tenant] = key
        return key

    def _context(self, call: Call) -> GuardContext:
        if call.guards is None:
            tenant = call.caller.tenant.id
            call.guards = GuardContext(
                tenant_id=tenant,
                request_id=call.request_id,
                model=call.route.model.name,
                tenant_secret=self._tenant_key(tenant),
            )
        return call.guards

    async def on_request(self, call: Call) -> str | None:
        policy = self._policy_for(call.caller.tenant.id)
        pipeline = self._pipeline_for(policy)
        if call.request.stream and pipeline.has_output and not pipeline.stream_capable:
            raise InvalidRequest(
                "This tenant's output rails cannot check a streamed answer; use stream=false.",
                param="stream",
            )
        if not pipeline.has_input:
            return None
        roles: list[str] = []
        slots = _input_slots(call.request.endpoint, call.request.body, policy.roles, roles)
        if not slots:
            return None
        ctx = self._context(call)
        # Yield to the loop before and after the rails: calls that arrived together
        # then run their input rails back to back (CPU work: PII analysis never
        # awaits) and only then send upstream, so the rails' code and data stay in
        # the CPU caches instead of being evicted by each call's HTTP handling and
        # syscalls in between. Measured with the PII guard at 32 in flight: ~30 µs
        # less guard time per call and less CPU overall; alone, a few µs of latency.
        await asyncio.sleep(0)
        try:
            texts = await pipeline.run("input", [c[k] for c, k in slots], ctx, roles)
        except (Blocked, GuardFailed) as exc:
            return _refusal_for(exc, policy, call)
        for (container, key), text in zip(slots, texts, strict=True):
            container[key] = text
        await asyncio.sleep(0)  # see above: send after the batch's rails
        if pipeline.parallel:
            check = pipeline.run_parallel(texts, roles, ctx)
            call.pending = asyncio.get_running_loop().create_task(check)
        return None

    async def alongside(self, call: Call, work: Awaitable[T]) -> T | str:
        check, call.pending = call.pending, None
        if check is None:
            return await work
        job = asyncio.ensure_future(work)
        try:
            await asyncio.wait((check, job), return_when=asyncio.FIRST_COMPLETED)
            if job.done() and job.exception() is not None:
                check.cancel()
                return await job  # the upstream failed: its error
            await check  # the rails decide even when the upstream answered first
        except (Blocked, GuardFailed) as exc:
            await _cancel(job)
            return _refusal_for(exc, self._policy_for(call.caller.tenant.id), call)
        except BaseException:
            check.cancel()
            await _cancel(job)
            raise
        return await job

    async def on_response(self, call: Call, reply: UpstreamReply) -> UpstreamReply:
        policy = self._policy_for(call.caller.tenant.id)
        pipeline = self._pipeline_for(policy)
        ctx = call.guards
        if not pipeline.has_output and not (ctx and ctx.vault):
            return reply
        ctx = self._context(call)
        try:
            answer = orjson.loads(reply.content)
        except orjson.JSONDecodeError:
            return reply
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not isinstance(choices, list):
            return reply
        changed = False
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            slots = _choice_slots(choice)
            try:
                texts = await pipeline.run("output", [c[k] for c, k in slots], ctx)
            except Blocked:
                _refuse_choice(choice, policy.refusal)
                changed = True
                continue
            except GuardFailed as exc:
                raise GuardUnavailable(f"The {exc.guard} rail is unavailable.") from None
            for (container, key), text in zip(slots, texts, strict=True):
                if container[key] != text:
                    container[key] = text
                    changed = True
        if not changed:  # the upstream's bytes stay as they came
            return reply
        return UpstreamReply(orjson.dumps(answer), reply.status, reply.content_type, reply.headers)

    def open_stream(self, call: Call) -> ChunkEdit | None:
        pipeline = self._pipeline_for(self._policy_for(call.caller.tenant.id))
        ctx = self._context(call)
        if pipeline.open_stream(ctx) is None:
            return None
        return ChunkEdit(lambda: pipeline.open_stream(ctx))

    def headers(self, call: Call) -> dict[str, str]:
        """`x-railgate-guards` (finding counts by guard and action) and guard time."""
        ctx = call.guards
        if ctx is None:
            return {}
        counts: dict[str, int] = {}
        for finding in ctx.findings:
            label = f"{finding.guard}.{finding.action}"
            counts[label] = counts.get(label, 0) + 1
        out = {"x-railgate-guard-ms": f"{sum(ctx.timings_ms.values()):.2f}"}
        if counts:
            out["x-railgate-guards"] = ",".join(f"{k}={v}" for k, v in sorted(counts.items()))
        return out


def _refusal_for(exc: Blocked | GuardFailed, policy: Policy, call: Call) -> str:
    """A blocked input: the refusal to answer with, or raise the error to send."""
    if isinstance(exc, GuardFailed):
        raise GuardUnavailable(f"The {exc.guard} rail is unavailable.") from None
    if policy.on_block == "refuse" and call.request.endpoint != "embeddings":
        return policy.refusal
    raise ContentBlocked(f"The request was blocked by the {exc.guard} rail.") from None


async def _cancel(job: asyncio.Future[Any]) -> None:
    """Stop the upstream call; an answer that already arrived is closed."""
    job.cancel()
    try:
        result = await job
    except BaseException:  # cancelled, or failed while being cancelled
        return
    close = getattr(result, "aclose", None)
    if close is not None:
        await close()


def _input_slots(
    endpoint: str, body: dict[str, Any], roles: tuple[str, ...], found_roles: list[str]
) -> list[Slot]:
    """The texts of a request the policy covers; `found_roles` gets each one's role."""
    slots: list[Slot] = []
    if endpoint == "chat/completions":
        for message in body.get("messages") or ():
            role = message.get("role") if isinstance(message, dict) else None
            if role in roles:
                before = len(slots)
                _content_slots(message, slots)
                _tool_call_slots(message, slots)
                found_roles += [role] * (len(slots) - before)
    else:
        key = "prompt" if endpoint == "completions" else "input"
        value = body.get(key)
        if isinstance(value, str):
            slots.append((body, key))
        elif isinstance(value, list):
            slots.extend((value, i) for i, item in enumerate(value) if isinstance(item, str))
        found_roles += ["user"] * len(slots)
    return slots


def _content_slots(message: dict[str, Any], slots: list[Slot]) -> None:
    content = message.get("content")
    if isinstance(content, str):
        slots.append((message, "content"))
    elif isinstance(content, list):
        for part in content:
            if (
                isinstance(part, dict)
                and part.get("type") == "text"
                and isinstance(part.get("text"), str)
            ):
                slots.append((part, "text"))


def _tool_call_slots(message: dict[str, Any], slots: list[Slot]) -> None:
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            slots.append((function, "arguments"))


def _choice_slots(choice: dict[str, Any]) -> list[Slot]:
    slots: list[Slot] = []
    if isinstance(choice.get("text"), str):
        slots.append((choice, "text"))
    message = choice.get("message")
    if isinstance(message, dict):
        _content_slots(message, slots)
        _tool_call_slots(message, slots)
    return slots


def _refuse_choice(choice: dict[str, Any], refusal: str) -> None:
    if "text" in choice:
        choice["text"] = refusal
    message = choice.get("message")
    if isinstance(message, dict):
        message["content"] = refusal
        message.pop("tool_calls", None)
    choice["finish_reason"] = "content_filter"


class ChunkEdit:
    """Per-stream editor of OpenAI chunk events (the `guards.StreamEdit` seam)."""

    def __init__(self, new_filter: Callable[[], StreamFilter | None]) -> None:
        self._new_filter = new_filter
        self._filters: dict[tuple[int, int], StreamFilter] = {}
        self._last: dict[str, Any] = {}
        self.finished = False

    def _filter(self, key: tuple[int, int]) -> StreamFilter:
        found = self._filters.get(key)
        if found is None:
            made = self._new_filter()
            assert made is not None
            found = self._filters[key] = made
        return found

    async def feed(self, event: bytes) -> list[bytes]:
        if self.finished:
            return []
        data = data_of(event)
        if data is None or data == b"[DONE]":
            return [event]
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return [event]
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        if not isinstance(choices, list) or not choices:
            return [event]
        self._last = {k: v for k, v in chunk.items() if k not in ("choices", "usage")}
        keep: list[Any] = []
        try:
            for c in choices:
                if not isinstance(c, dict) or await self._edit_choice(c):
                    keep.append(c)
        except Blocked:
            return self._blocked()
        if not keep:
            return []
        chunk["choices"] = keep
        return [encode(orjson.dumps(chunk))]

    async def _edit_choice(self, choice: dict[str, Any]) -> bool:
        """Filter one choice in place; False when nothing is left worth sending."""
        index = choice.get("index", 0)
        delta = choice.get("delta")
        finished = choice.get("finish_reason") is not None
        if isinstance(choice.get("text"), str):  # /v1/completions streams
            text = await self._filter((index, -1)).feed(choice["text"])
            if finished:
                text += await self._filter((index, -1)).flush()
            choice["text"] = text
            return bool(text or finished)
        if not isinstance(delta, dict):
            return True
        content = delta.get("content")
        if isinstance(content, str):
            delta["content"] = await self._filter((index, -1)).feed(content)
        for call in delta.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                key = (index, int(call.get("index", 0)))
                function["arguments"] = await self._filter(key).feed(function["arguments"])
        if finished:
            for (owner, tool), flt in list(self._filters.items()):
                rest = await flt.flush() if owner == index else ""
                if rest and tool < 0:
                    delta["content"] = (delta.get("content") or "") + rest
                elif rest:
                    delta.setdefault("tool_calls", []).append(
                        {"index": tool, "function": {"arguments": rest}}
                    )
        return bool(
            finished
            or delta.get("content")
            or delta.get("role")
            or delta.get("tool_calls")
            or delta.get("refusal")
            or set(delta) - {"content", "role", "tool_calls", "refusal"}
        )

    async def flush(self) -> list[bytes]:
        """Upstream ended without a finish_reason for some choice: release what is held."""
        if self.finished:
            return []
        out: list[bytes] = []
        try:
            for (index, tool), flt in self._filters.items():
                rest = await flt.flush()
                if not rest:
                    continue
                choice: dict[str, Any] = {"index": index, "finish_reason": None}
                if self._last.get("object") == "text_completion":
                    choice["text"] = rest
                elif tool < 0:
                    choice["delta"] = {"content": rest}
                else:
                    tool_delta = {"index": tool, "function": {"arguments": rest}}
                    choice["delta"] = {"tool_calls": [tool_delta]}
                out.append(encode(orjson.dumps({**self._last, "choices": [choice]})))
        except Blocked:
            return self._blocked()
        return out

    def _blocked(self) -> list[bytes]:
        self.finished = True
        final = {
            **self._last,
            "created": self._last.get("created", int(time.time())),
            "choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}],
        }
        error = error_body(
            "The answer was stopped by a content rail.", "invalid_request_error", "content_filter"
        )
        return [encode(orjson.dumps(final)), encode(error)]
