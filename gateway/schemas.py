"""Typed views of the OpenAI wire format, parsed at the edge.

A request is decoded twice from the same bytes: into a typed struct that checks the
fields we rely on (a wrong type is a 400 naming the field), and into a plain mapping
that is forwarded upstream, so unknown fields, tools, response_format, logprobs,
multi-modal parts … pass through untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from gateway.errors import InvalidRequest
from gateway.providers.base import Endpoint

__all__ = [
    "ChatCompletionRequest",
    "ChunkView",
    "ClientRequest",
    "CompletionRequest",
    "CompletionTokensDetails",
    "EmbeddingRequest",
    "PromptTokensDetails",
    "ReplyView",
    "Usage",
    "parse_request",
]


class Message(msgspec.Struct):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class _Common(msgspec.Struct):
    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    max_tokens: int | None = None
    n: int | None = None


class ChatCompletionRequest(_Common):
    messages: list[Message] = []
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] | None = None


class CompletionRequest(_Common):
    prompt: str | list[Any] | None = None


class EmbeddingRequest(msgspec.Struct):
    model: str
    input: str | list[Any]
    user: str | None = None
    dimensions: int | None = None


_TYPES: dict[Endpoint, type[msgspec.Struct]] = {
    "chat/completions": ChatCompletionRequest,
    "completions": CompletionRequest,
    "embeddings": EmbeddingRequest,
}
_DECODERS = {endpoint: msgspec.json.Decoder(kind) for endpoint, kind in _TYPES.items()}


@dataclass(slots=True)
class ClientRequest:
    """A validated request: the typed view for decisions, the mapping for forwarding."""

    endpoint: Endpoint
    typed: ChatCompletionRequest | CompletionRequest | EmbeddingRequest
    body: dict[str, Any]

    @property
    def model(self) -> str:
        return self.typed.model

    @property
    def stream(self) -> bool:
        return isinstance(self.typed, _Common) and self.typed.stream

    @property
    def wants_usage(self) -> bool:
        """The client asked for the trailing usage chunk of a stream."""
        typed = self.typed
        return isinstance(typed, _Common) and bool(
            typed.stream_options and typed.stream_options.include_usage
        )

    @property
    def user(self) -> str | None:
        return self.typed.user


_TOO_DEEP = "Request body is nested too deeply."
_MAX_FORWARD_DEPTH = 250
"""Fewer opening brackets than this cannot reach orjson's encoding depth limit (254)."""
_MISSING = re.compile(r"^Object missing required field `(.+)`$")


def _param_of(error: str) -> tuple[str, str | None]:
    """(reason, field path) from a msgspec message such as
    "Object missing required field `role` - at `$.messages[0]`" → `messages[0].role`."""
    reason, sep, at = error.rpartition(" - at `")
    if not sep:
        reason, at = error, "$`"
    path = at.removesuffix("`")
    missing = _MISSING.match(reason)
    if missing:
        path = f"{path}.{missing.group(1)}"
    return reason, path.removeprefix("$").removeprefix(".") or None


def parse_request(endpoint: Endpoint, raw: bytes) -> ClientRequest:
    """Validate `raw` for `endpoint`; raise `InvalidRequest` naming the bad field."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("Request body is not valid JSON.") from None
    except RecursionError:
        raise InvalidRequest(_TOO_DEEP) from None
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object.")
    if "model" not in body:
        raise InvalidRequest("Missing required field `model`.", param="model")
    if raw.count(b"[") + raw.count(b"{") >= _MAX_FORWARD_DEPTH:
        # Only bodies that could be that deep pay for the check (a C-speed re-encode).
        try:
            orjson.dumps(body)
        except orjson.JSONEncodeError:
            raise InvalidRequest(_TOO_DEEP) from None
    try:
        typed = _DECODERS[endpoint].decode(raw)
    except msgspec.ValidationError as exc:
        reason, param = _param_of(str(exc))
        raise InvalidRequest(f"Invalid request: {reason}.", param=param) from None
    except msgspec.DecodeError:
        raise InvalidRequest("Request body is not valid JSON.") from None
    except RecursionError:
        raise InvalidRequest(_TOO_DEEP) from None
    if isinstance(typed, ChatCompletionRequest) and not typed.messages:
        raise InvalidRequest("`messages` must be a non-empty list.", param="messages")
    if isinstance(typed, CompletionRequest) and typed.prompt is None:
        raise InvalidRequest("Missing required field `prompt`.", param="prompt")
    if not typed.model:  # type: ignore[attr-defined]
        raise InvalidRequest("`model` must be a non-empty string.", param="model")
    return ClientRequest(endpoint=endpoint, typed=typed, body=body)  # type: ignore[arg-type]


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: int | None = None
    """Prompt tokens served from the provider's prompt cache."""


class CompletionTokensDetails(msgspec.Struct):
    reasoning_tokens: int | None = None
    """Completion tokens the model spent reasoning (not in the answer text)."""


class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None
    """Optional breakdowns; their counts may be null (some OpenAI-compatible servers)."""


class ChoiceEnd(msgspec.Struct):
    finish_reason: str | None = None


class ReplyView(msgspec.Struct):
    """What the gateway reads from a complete answer (the bytes go to the client as they are)."""

    usage: Usage | None = None
    model: str | None = None
    choices: list[ChoiceEnd] = []


class FinishView(msgspec.Struct):
    """A streamed chunk that ends a choice: its model and finish reasons."""

    model: str | None = None
    choices: list[ChoiceEnd] = []


class ChunkView(msgspec.Struct):
    """What the gateway reads from one streamed chunk."""

    usage: Usage | None = None
    choices: list[msgspec.Raw] = []


reply_decoder = msgspec.json.Decoder(ReplyView)
chunk_decoder = msgspec.json.Decoder(ChunkView)
finish_decoder = msgspec.json.Decoder(FinishView)
