"""OpenAI chat completions → Anthropic Messages requests, as pure functions (no I/O).

    to_messages_request()   OpenAI chat request body  → Anthropic `POST /messages` body

The way back (answers, streams, errors) is in `anthropic_reply`.

What a client sends that Anthropic cannot express is refused with `InvalidRequest`
(400) rather than dropped, when dropping it would change the answer's contract
(`n > 1`, JSON response formats, legacy `functions`, audio or file parts). Sampling
knobs Anthropic lacks (`seed`, penalties, `logit_bias`, `logprobs`) are ignored. Error
messages name the offending field and never quote its content.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from gateway.errors import InvalidRequest

__all__ = ["ANTHROPIC_VERSION", "DEFAULT_MAX_TOKENS", "to_messages_request"]

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
"""Anthropic requires `max_tokens`; this is sent when the client gave no limit."""

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def _unsupported(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_parameter")


# ---------------------------------------------------------------- request


def to_messages_request(body: dict[str, Any], *, stream: bool = False) -> dict[str, Any]:
    """Translate an OpenAI chat-completions body into an Anthropic Messages body.

    Raises:
        InvalidRequest: the body is malformed or asks for something Anthropic cannot do.
    """
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise InvalidRequest("`messages` must be a non-empty list.", param="messages")
    _refuse_unsupported(body)
    system, messages = _messages(raw_messages)
    out: dict[str, Any] = {
        "model": body.get("model"),
        "max_tokens": _max_tokens(body),
        "messages": messages,
    }
    if system:
        out["system"] = "\n\n".join(system)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = stop
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": body["user"]}
    _tools(body, out)
    if stream:
        out["stream"] = True
    return out


def _refuse_unsupported(body: dict[str, Any]) -> None:
    """Refuse what would silently change the answer's contract if dropped."""
    if body.get("n") not in (None, 1):
        raise _unsupported("This model's provider returns one choice only; `n` must be 1.", "n")
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") not in (None, "text"):
        raise _unsupported(
            "This model's provider does not support `response_format`; use tools instead.",
            "response_format",
        )
    if body.get("functions"):
        raise _unsupported("`functions` is not supported; use `tools`.", "functions")


def _max_tokens(body: dict[str, Any]) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidRequest(f"`{name}` must be a positive integer.", param=name)
        return value
    return DEFAULT_MAX_TOKENS


def _messages(raw: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"`{where}` must be an object.", param=where)
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.append(_text_only(content, where))
        elif role == "user":
            _append(messages, "user", _user_content(content, where))
        elif role == "assistant":
            reply = _assistant_content(message, where)
            if reply:  # Anthropic refuses empty turns; an empty one carries nothing
                _append(messages, "assistant", reply)
        elif role == "tool":
            tool_call_id = message.get("tool_call_id")
            if not isinstance(tool_call_id, str) or not tool_call_id:
                raise InvalidRequest(
                    f"`{where}.tool_call_id` is required.", param=f"{where}.tool_call_id"
                )
            result = {"type": "tool_result", "tool_use_id": tool_call_id}
            result["content"] = _text_only(content, where)
            _append(messages, "user", [result])
        else:
            raise _unsupported(f"`{where}.role` is not supported.", f"{where}.role")
    return system, messages


def _append(messages: list[dict[str, Any]], role: str, content: str | list[Any]) -> None:
    """Add a turn; consecutive turns of one role become one (tool results stay first)."""
    if messages and messages[-1]["role"] == role:
        last = messages[-1]
        last["content"] = _blocks(last["content"]) + _blocks(content)
    else:
        messages.append({"role": role, "content": content})


def _blocks(content: str | list[Any]) -> list[Any]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _text_only(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                param = f"{where}.content[{j}]"
                raise _unsupported(f"`{param}` must be a text part.", param)
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    if content is None:
        return ""
    raise InvalidRequest(f"`{where}.content` must be a string or a list.", param=f"{where}.content")


def _user_content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        param = f"{where}.content"
        raise InvalidRequest(f"`{param}` must be a string or a list.", param=param)
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        param = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url"), param))
        else:
            raise _unsupported(f"`{param}.type` is not supported by this model's provider.", param)
    return blocks


def _image(image_url: Any, param: str) -> dict[str, Any]:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str):
        raise InvalidRequest(f"`{param}.image_url.url` is required.", param=param)
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    head, comma, data = url.partition(",")
    media_type = head.removeprefix("data:").removesuffix(";base64")
    if not (head.startswith("data:") and head.endswith(";base64") and comma):
        raise InvalidRequest(
            f"`{param}.image_url.url` must be an http(s) URL or a base64 data URL.", param=param
        )
    if media_type not in _IMAGE_TYPES:
        raise _unsupported(f"`{param}` image type must be JPEG, PNG, GIF or WebP.", param)
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"`{param}.image_url.url` is not valid base64.", param=param) from None
    source = {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "image", "source": source}


def _assistant_content(message: dict[str, Any], where: str) -> str | list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, list):  # a refusal given earlier is not sent back as text
        content = [p for p in content if not (isinstance(p, dict) and p.get("type") == "refusal")]
    text = _text_only(content, where)
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        param = f"{where}.tool_calls"
        raise InvalidRequest(f"`{param}` must be a list.", param=param)
    if not tool_calls:
        return text
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for j, call in enumerate(tool_calls):
        blocks.append(_tool_use(call, f"{where}.tool_calls[{j}]"))
    return blocks


def _tool_use(call: Any, param: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequest(f"`{param}.function.name` is required.", param=param)
    if not isinstance(call.get("id"), str) or not call["id"]:
        raise InvalidRequest(f"`{param}.id` is required.", param=f"{param}.id")
    arguments = function.get("arguments")
    try:
        parsed = orjson.loads(arguments) if arguments and arguments.strip() else {}
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        parsed = None
    if not isinstance(parsed, dict):
        raise InvalidRequest(
            f"`{param}.function.arguments` must be a JSON object encoded as a string.",
            param=f"{param}.function.arguments",
        )
    return {"type": "tool_use", "id": call["id"], "name": function["name"], "input": parsed}


def _tools(body: dict[str, Any], out: dict[str, Any]) -> None:
    tools = body.get("tools")
    if not tools:
        return
    if not isinstance(tools, list):
        raise InvalidRequest("`tools` must be a list.", param="tools")
    converted = []
    for i, tool in enumerate(tools):
        is_function = isinstance(tool, dict) and tool.get("type") == "function"
        function = tool.get("function") if is_function else None
        if not isinstance(function, dict):
            raise _unsupported("Only function tools are supported.", f"tools[{i}]")
        if not isinstance(function.get("name"), str):
            raise InvalidRequest(f"`tools[{i}].function.name` is required.", param=f"tools[{i}]")
        spec: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            spec["description"] = function["description"]
        spec["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
        converted.append(spec)
    out["tools"] = converted
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and choice.get("type") != "none":
        choice["disable_parallel_tool_use"] = True
    if choice != {"type": "auto"}:
        out["tool_choice"] = choice


def _tool_choice(choice: Any) -> dict[str, Any]:
    if choice is None or choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str):
            return {"type": "tool", "name": name}
    raise InvalidRequest("`tool_choice` is not valid.", param="tool_choice")


# ---------------------------------------------------------------- response
