"""Typed views of the OpenAI wire format, parsed at the edge.

A request is decoded twice from the same bytes: into a typed struct that checks the
fields we rely on (a wrong type is a 400 naming the field), and into a plain mapping
that is forwarded upstream, so unknown fields, tools, response_format, logprobs,
multi-modal parts … pass through untouched.
"""

from __future__ import annotations

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
    "EmbeddingRequest",
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


def parse_request(endpoint: Endpoint, raw: bytes) -> ClientRequest:
    """Validate `raw` for `endpoint`; raise `InvalidRequest` naming the bad field."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("Request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object.")
    if "model" not in body:
        raise InvalidRequest("Missing required field `model`.", param="model")
    try:
        typed = _DECODERS[endpoint].decode(raw)
    except msgspec.ValidationError as exc:
        reason, _, path = str(exc).rpartition(" - at `")
        param = path.rstrip("`").removeprefix("$.") if path else None
        raise InvalidRequest(f"Invalid request: {reason or exc}.", param=param) from None
    except msgspec.DecodeError:
        raise InvalidRequest("Request body is not valid JSON.") from None
    if isinstance(typed, ChatCompletionRequest) and not typed.messages:
        raise InvalidRequest("`messages` must be a non-empty list.", param="messages")
    if isinstance(typed, CompletionRequest) and typed.prompt is None:
        raise InvalidRequest("Missing required field `prompt`.", param="prompt")
    if not typed.model:  # type: ignore[attr-defined]
        raise InvalidRequest("`model` must be a non-empty string.", param="model")
    return ClientRequest(endpoint=endpoint, typed=typed, body=body)  # type: ignore[arg-type]


class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ReplyView(msgspec.Struct):
    """What the gateway reads from a complete answer (the bytes go to the client as they are)."""

    usage: Usage | None = None


class ChunkView(msgspec.Struct):
    """What the gateway reads from one streamed chunk."""

    usage: Usage | None = None
    choices: list[msgspec.Raw] = []


reply_decoder = msgspec.json.Decoder(ReplyView)
chunk_decoder = msgspec.json.Decoder(ChunkView)
