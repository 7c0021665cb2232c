"""How many tokens a request may use, estimated before it is sent.

Reserved at admission = prompt estimate + the output the request may produce
(`max_completion_tokens`, else `max_tokens`, else the configured default, times `n`).
Settlement then corrects the reservation to the provider's real usage.

The prompt estimate is ceil(characters / 4) per text plus 4 tokens per chat message
and 3 for the reply's priming (OpenAI's published rule of thumb for English), and 85
per non-text part (an image at low detail). It runs in microseconds on the hot path.
A real tokenizer is not used: tiktoken fetches its vocabularies over the network on
first use, which these deployments must not do, and exact counts only matter until
the real usage arrives a moment later.
"""

from __future__ import annotations

from typing import Any

from gateway.schemas import ChatCompletionRequest, ClientRequest, CompletionRequest

__all__ = ["estimate_tokens"]

CHARS_PER_TOKEN = 4
PER_MESSAGE = 4
REPLY_PRIMING = 3
PER_NON_TEXT_PART = 85


def _text_tokens(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return _text_tokens(len(content))
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                total += _text_tokens(len(part["text"]))
            elif isinstance(part, str):
                total += _text_tokens(len(part))
            elif isinstance(part, int):
                total += 1  # a token id
            elif isinstance(part, list):
                total += len(part)  # a list of token ids
            else:
                total += PER_NON_TEXT_PART
        return total
    return 0


def _prompt_tokens(request: ClientRequest) -> int:
    typed = request.typed
    if isinstance(typed, ChatCompletionRequest):
        total = REPLY_PRIMING
        for message in typed.messages:
            total += PER_MESSAGE + _content_tokens(message.content)
            for call in message.tool_calls or ():
                function = call.get("function")
                if isinstance(function, dict):
                    total += _text_tokens(len(str(function.get("arguments", ""))))
        return total
    if isinstance(typed, CompletionRequest):
        return _content_tokens(typed.prompt)
    return _content_tokens(typed.input)


def estimate_tokens(request: ClientRequest, default_max_tokens: int) -> tuple[int, int]:
    """(prompt estimate, output allowance) for `request`."""
    typed = request.typed
    if not isinstance(typed, ChatCompletionRequest | CompletionRequest):
        return _prompt_tokens(request), 0
    cap = getattr(typed, "max_completion_tokens", None)
    if cap is None:
        cap = typed.max_tokens
    output = max(0, cap if cap is not None else default_max_tokens) * max(1, typed.n or 1)
    return _prompt_tokens(request), output
