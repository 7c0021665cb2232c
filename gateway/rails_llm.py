"""The rails model: NeMo's LLM calls served by the gateway's own providers.

`rails.model` in the config names one of the gateway's models; every self-check or
topical prompt of a tenant's NeMo rails becomes a chat completion on that model's
provider (same keys and upstream pool as client traffic), bounded by
`rails.model_timeout_ms`, carrying the request id, and recorded on the call as rails
usage (`UsageRecord.rails`), apart from the main call's tokens.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from gateway.errors import GatewayError
from gateway.providers.base import UpstreamRequest
from gateway.providers.registry import ModelRouter
from rails import GuardContext, ModelCall

__all__ = ["GatewayRailsLLM"]


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Reply(msgspec.Struct):
    choices: list[_Choice] = msgspec.field(default_factory=list)
    usage: _Usage | None = None


_decode = msgspec.json.Decoder(_Reply).decode


class RailsModelError(RuntimeError):
    """The rails model did not answer (a rail error: its `on_error` decides)."""


class GatewayRailsLLM:
    """`rails.nemo.model.RailsLLM` over the gateway's router."""

    def __init__(self, router: ModelRouter, model: str, timeout_s: float) -> None:
        self.model = model
        self._router = router
        self._timeout_s = timeout_s
        router.resolve(model)  # unknown model: fail at start-up, not on a request

    async def complete(
        self,
        messages: list[dict[str, str]],
        ctx: GuardContext,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
    ) -> tuple[str, ModelCall]:
        route = self._router.resolve(self.model)
        body: dict[str, Any] = {"model": route.model.target, "messages": messages}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        if stop:
            body["stop"] = stop
        request = UpstreamRequest(
            endpoint="chat/completions",
            body=body,
            stream=False,
            headers={"x-request-id": ctx.request_id},
        )
        try:
            async with asyncio.timeout(self._timeout_s):
                reply = await route.provider.complete(request)
            parsed = _decode(reply.content)
        except TimeoutError:
            raise RailsModelError("rails model timed out") from None
        except (GatewayError, msgspec.DecodeError) as exc:
            raise RailsModelError(f"rails model failed: {type(exc).__name__}") from None
        text = ""
        if parsed.choices and parsed.choices[0].message is not None:
            text = parsed.choices[0].message.content or ""
        usage = parsed.usage or _Usage()
        prices = route.model
        cost = round(
            usage.prompt_tokens * prices.input_price_per_mtok
            + usage.completion_tokens * prices.output_price_per_mtok
        )
        call = ModelCall("nemo", self.model, usage.prompt_tokens, usage.completion_tokens, cost)
        return text, call
