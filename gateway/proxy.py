"""The life of one proxied request, top to bottom.

    authenticate (key → tenant)          tenancy.Authenticator
    parse + validate the body            schemas.parse_request
    route the model, check it is allowed providers.registry.ModelRouter
    admit                                ratelimit.Limiter       (reserve)
    input stage                          guards.ContentStages.on_request
    pace (provider limits)               ratelimit.Limiter.pace  (may wait)
    upstream call                        providers.Provider.complete / open_stream
    output stage                         on_response, or a StreamEdit per event
    finish                               Limiter.settle, telemetry observers and
                                         UsageSink.record, off the hot path

Streams are relayed event by event as they arrive. The gateway always asks the
upstream for the trailing usage chunk and drops it again when the client did not ask.
After the first byte an upstream failure cannot change the status any more: the
stream ends with one OpenAI-shaped error event. A client that disconnects cancels
the upstream call; whatever usage was seen is still recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from gateway.call import Call
from gateway.errors import GatewayError, ModelNotAllowed, UpstreamError, error_body
from gateway.guards import ContentStages, StreamEdit
from gateway.providers.base import Endpoint, EventStream, UpstreamRequest
from gateway.providers.mock import RefusalProvider
from gateway.providers.registry import ModelRouter
from gateway.ratelimit import Limiter, Ticket
from gateway.schemas import chunk_decoder, finish_decoder, parse_request, reply_decoder
from gateway.sse import data_of, encode
from gateway.tasks import Tasks
from gateway.telemetry.observer import Exchange, Telemetry
from gateway.telemetry.tracecontext import trace_context
from gateway.tenancy import Authenticator, extract_key
from gateway.usage import UsageRecord, UsageSink, record_for

__all__ = ["Proxy", "ProxyResponse"]

log = logging.getLogger("railgate")

T = TypeVar("T")

_STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@dataclass(slots=True)
class ProxyResponse:
    """What the route sends: a complete body, or an event stream."""

    status: int
    media_type: str
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes = b""
    events: AsyncGenerator[bytes, None] | None = None


class Proxy:
    def __init__(
        self,
        auth: Authenticator,
        router: ModelRouter,
        limiter: Limiter,
        stages: ContentStages,
        sink: UsageSink,
        tasks: Tasks,
        max_body_bytes: int,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.auth = auth
        self.router = router
        self.limiter = limiter
        self.stages = stages
        self.sink = sink
        self.tasks = tasks
        self.telemetry = telemetry or Telemetry()

    async def handle(
        self,
        endpoint: Endpoint,
        raw: bytes,
        headers: Mapping[str, str],
        request_id: str,
        client_ip: str | None = None,
    ) -> ProxyResponse:
        started, wall_ns = time.perf_counter(), time.time_ns()
        trace = trace_context(headers)
        try:
            caller = await self.auth.authenticate(
                extract_key(headers.get("authorization"), headers.get("x-api-key"))
            )
            request = parse_request(endpoint, raw)
            route = self.router.resolve(request.model)
            if not caller.may_use(route.model.name):
                raise ModelNotAllowed("This key may not use the requested model.", param="model")
        except GatewayError as exc:  # never became a call: no usage record, one exchange
            self.telemetry.exchanged(
                Exchange(
                    request_id=request_id,
                    method="POST",
                    path=f"/v1/{endpoint}",
                    status=exc.status_code,
                    duration_ms=(time.perf_counter() - started) * 1000,
                    client_ip=client_ip,
                    error=exc.code,
                    trace_id=trace.trace_id,
                    proxied=True,
                )
            )
            raise
        call = Call(
            request_id=request_id,
            caller=caller,
            route=route,
            request=request,
            trace=trace,
            user=request.user or headers.get("x-railgate-user"),
            session_id=headers.get("x-railgate-session-id"),
            client_ip=client_ip,
            started=started,
            wall_ns=wall_ns,
        )
        call.authed = time.perf_counter()
        call.keep_output = self.telemetry.wants_content(caller.tenant)
        try:
            ticket = await self.limiter.admit(call)
        except GatewayError as exc:  # refused (429) or no store (503): still a usage record
            call.status, call.error = exc.status_code, exc.code
            call.ended = time.perf_counter()
            self.tasks.spawn(self._record(record_for(call), call))
            raise
        call.admitted = time.perf_counter()
        handed_off = False
        try:
            refusal = await self.stages.on_request(call)
            call.input_done = time.perf_counter()
            provider = route.provider if refusal is None else RefusalProvider(refusal)
            upstream = self._upstream_request(call)
            paced = refusal is None
            if request.stream:
                opened = await self.stages.alongside(
                    call, self._send(call, ticket, provider.open_stream, upstream, paced)
                )
                if isinstance(opened, str):  # a parallel rail blocked: refuse instead
                    refusal = opened
                    opened = await RefusalProvider(refusal).open_stream(upstream)
                events = opened
                handed_off = True
                edit = None if refusal is not None else self.stages.open_stream(call)
                return ProxyResponse(
                    status=200,
                    media_type="text/event-stream",
                    headers={**_STREAM_HEADERS, **ticket.headers, **self.stages.headers(call)},
                    events=self._relay(call, ticket, events, edit),
                )
            answered = await self.stages.alongside(
                call, self._send(call, ticket, provider.complete, upstream, paced)
            )
            if isinstance(answered, str):  # a parallel rail blocked: refuse instead
                refusal = answered
                answered = await RefusalProvider(refusal).complete(upstream)
            reply = answered
            call.first_byte = time.perf_counter()
            _read_reply(call, reply.content, provider.name)
            if call.keep_output:
                call.upstream_reply = reply.content
            if refusal is None:
                reply = await self.stages.on_response(call, reply)
            return ProxyResponse(
                status=reply.status,
                media_type=reply.content_type,
                headers={**ticket.headers, **self.stages.headers(call)},
                content=reply.content,
            )
        except GatewayError as exc:
            call.status, call.error = exc.status_code, exc.code
            for name, value in ticket.headers.items():  # limited errors carry them too
                exc.headers.setdefault(name, value)
            raise
        except asyncio.CancelledError:
            call.status, call.error = 499, "client_disconnected"
            raise
        finally:
            if not handed_off:
                self._finish(call, ticket)

    async def _send(
        self,
        call: Call,
        ticket: Ticket,
        send: Callable[[UpstreamRequest], Awaitable[T]],
        upstream: UpstreamRequest,
        paced: bool,
    ) -> T:
        """The upstream call, after the provider's pacing (refusals are not paced).
        A stream's upstream time ends with the stream (`_finish`), an answer's here."""
        if paced:
            await self.limiter.pace(ticket, call)
        call.upstream_started = time.perf_counter()
        try:
            result = await send(upstream)
        except BaseException:  # failed, timed out or cancelled: the upstream part ended
            call.upstream_ended = time.perf_counter()
            raise
        if not call.request.stream:
            call.upstream_ended = time.perf_counter()
        return result

    def _upstream_request(self, call: Call) -> UpstreamRequest:
        request = call.request
        body = request.body
        target = call.route.model.target
        if body["model"] != target:
            body["model"] = target
        if request.stream:
            options = body.get("stream_options")
            body["stream_options"] = {**(options or {}), "include_usage": True}
        return UpstreamRequest(
            endpoint=request.endpoint,
            body=body,
            stream=request.stream,
            headers=call.trace.upstream_headers(call.request_id),
        )

    async def _relay(
        self, call: Call, ticket: Ticket, events: EventStream, edit: StreamEdit | None
    ) -> AsyncGenerator[bytes, None]:
        wants_usage = call.request.wants_usage
        kept = call.upstream_events = [] if call.keep_output else None
        try:
            async for event in events:
                if call.first_byte is None:
                    call.first_byte = time.perf_counter()
                if kept is not None:
                    kept.append(event)
                data = data_of(event)
                if data is not None and b'"finish_reason":"' in data:
                    _read_finish(call, data)
                if data is not None and b'"usage"' in data:
                    try:
                        view = chunk_decoder.decode(data)
                    except msgspec.DecodeError:
                        view = None
                    if view is not None:
                        if view.usage is not None:
                            call.usage = view.usage
                        if not wants_usage and not view.choices:
                            continue
                if edit is None:
                    yield event
                else:
                    for out in await edit.feed(event):
                        yield out
                    if edit.finished:
                        call.error = "content_filter"
                        break
            if edit is not None and not edit.finished:
                for out in await edit.flush():
                    yield out
        except GatewayError as exc:
            call.status, call.error = exc.status_code, exc.code
            log.warning("stream ended early: %s", exc.code)
            yield encode(error_body(exc.message, exc.type, exc.code))
        except (asyncio.CancelledError, GeneratorExit):
            call.status, call.error = 499, "client_disconnected"
            raise
        finally:
            await events.aclose()
            self._finish(call, ticket)

    def _finish(self, call: Call, ticket: Ticket) -> None:
        call.ended = time.perf_counter()
        if call.upstream_started is not None and call.upstream_ended is None:
            call.upstream_ended = call.ended
        self.tasks.spawn(self._settle(call, ticket))

    async def _settle(self, call: Call, ticket: Ticket) -> None:
        await self.limiter.settle(ticket, call)
        await self._record(record_for(call), call)

    async def _record(self, record: UsageRecord, call: Call) -> None:
        self.telemetry.finished(call, record)
        await self.sink.record(record)


def _read_reply(call: Call, content: bytes, provider: str) -> None:
    """Usage, model and finish reasons of a complete answer (all optional)."""
    try:
        view = reply_decoder.decode(content)
    except msgspec.ValidationError:
        return
    except msgspec.DecodeError:
        raise UpstreamError(f"Provider {provider!r} returned an invalid answer.") from None
    call.usage = view.usage
    call.response_model = view.model
    if view.choices:
        call.finish_reasons = [c.finish_reason for c in view.choices if c.finish_reason]


def _read_finish(call: Call, data: bytes) -> None:
    """Model and finish reasons of a chunk that ends a choice (usually one per stream)."""
    try:
        view = finish_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return
    reasons = [c.finish_reason for c in view.choices if c.finish_reason]
    if reasons:
        call.finish_reasons = (call.finish_reasons or []) + reasons
        call.response_model = view.model or call.response_model
