"""ChunkEdit: streamed chunks through per-choice stream filters, metadata intact."""

from __future__ import annotations

import orjson
import pytest

from gateway.content import ChunkEdit
from gateway.sse import data_of, encode
from rails.base import Blocked


class HoldTwo:
    """Upper-cases and always holds back the last two characters until flushed."""

    def __init__(self) -> None:
        self.held = ""

    async def feed(self, text: str) -> str:
        self.held += text
        out, self.held = self.held[:-2], self.held[-2:]
        return out.upper()

    async def flush(self) -> str:
        out, self.held = self.held, ""
        return out.upper()


class BlockOnX(HoldTwo):
    async def feed(self, text: str) -> str:
        if "x" in text:
            raise Blocked("fake", "x found")
        return await super().feed(text)


def chunk(index: int, delta: dict, finish: str | None = None, **extra) -> bytes:
    body = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 5,
        "model": "m",
        "system_fingerprint": "fp",
        **extra,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }
    return encode(orjson.dumps(body))


def parsed(events: list[bytes]) -> list[dict]:
    return [orjson.loads(data_of(e)) for e in events if data_of(e) != b"[DONE]"]


async def run(edit: ChunkEdit, events: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for event in events:
        out.extend(await edit.feed(event))
    out.extend(await edit.flush())
    return out


async def test_choices_are_filtered_separately_and_flushed_on_finish():
    edit = ChunkEdit(HoldTwo)
    events = [
        chunk(0, {"role": "assistant", "content": ""}),
        chunk(1, {"role": "assistant", "content": ""}),
        chunk(0, {"content": "hello "}),
        chunk(1, {"content": "world "}),
        chunk(0, {"content": "there"}),
        chunk(0, {}, "stop"),
        chunk(1, {}, "length"),
        b"data: [DONE]\n\n",
    ]
    out = await run(edit, events)
    assert out[-1] == b"data: [DONE]\n\n"
    texts: dict[int, str] = {0: "", 1: ""}
    finishes = {}
    for body in parsed(out):
        assert body["system_fingerprint"] == "fp" and body["id"] == "c1"
        for choice in body["choices"]:
            texts[choice["index"]] += choice["delta"].get("content") or ""
            if choice["finish_reason"]:
                finishes[choice["index"]] = choice["finish_reason"]
    assert texts == {0: "HELLO THERE", 1: "WORLD "}
    assert finishes == {0: "stop", 1: "length"}


async def test_chunks_with_nothing_left_are_dropped_but_roles_kept():
    edit = ChunkEdit(HoldTwo)
    out = await edit.feed(chunk(0, {"content": "ab"}))  # all held back
    assert out == []
    out = await edit.feed(chunk(0, {"role": "assistant", "content": ""}))
    assert parsed(out)[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}


async def test_tool_call_arguments_are_filtered_per_tool():
    edit = ChunkEdit(HoldTwo)
    events = [
        chunk(
            0,
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "t",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a":'},
                    }
                ]
            },
        ),
        chunk(0, {"tool_calls": [{"index": 0, "function": {"arguments": '"b"}'}}]}),
        chunk(0, {}, "tool_calls"),
    ]
    out = parsed(await run(edit, events))
    args = "".join(
        call["function"].get("arguments", "")
        for body in out
        for choice in body["choices"]
        for call in choice["delta"].get("tool_calls", [])
    )
    assert args == '{"A":"B"}'
    assert out[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "f"


async def test_usage_and_other_events_pass_through():
    edit = ChunkEdit(HoldTwo)
    usage = encode(b'{"id":"c1","choices":[],"usage":{"prompt_tokens":1}}')
    comment = b": keep-alive\n\n"
    assert await edit.feed(usage) == [usage]
    assert await edit.feed(comment) == [comment]


async def test_block_mid_stream_ends_with_content_filter_and_an_error_event():
    edit = ChunkEdit(BlockOnX)
    first = await edit.feed(chunk(0, {"content": "safe words "}))
    blocked = await edit.feed(chunk(0, {"content": "then x"}))
    assert edit.finished
    assert await edit.feed(chunk(0, {"content": "more"})) == []
    assert await edit.flush() == []
    bodies = parsed(blocked)
    assert bodies[0]["choices"][0]["finish_reason"] == "content_filter"
    assert bodies[1]["error"]["code"] == "content_filter"
    assert (
        "then" not in str(bodies)
        and parsed(first)[0]["choices"][0]["delta"]["content"] == "SAFE WORD"
    )


async def test_stream_ending_without_finish_releases_held_text():
    edit = ChunkEdit(HoldTwo)
    out = parsed(await run(edit, [chunk(0, {"content": "abcdef"})]))
    assert "".join(c["delta"]["content"] for b in out for c in b["choices"]) == "ABCDEF"


@pytest.mark.parametrize(
    "bad", [b"data: not json\n\n", b"data: [1,2]\n\n", b'data: {"choices": 3}\n\n']
)
async def test_odd_events_are_relayed_untouched(bad):
    edit = ChunkEdit(HoldTwo)
    assert await edit.feed(bad) == [bad]


async def test_completion_stream_text_is_filtered():
    edit = ChunkEdit(HoldTwo)

    def piece(text: str, finish: str | None = None) -> bytes:
        body = {
            "id": "x",
            "object": "text_completion",
            "choices": [{"index": 0, "text": text, "finish_reason": finish}],
        }
        return encode(orjson.dumps(body))

    out = parsed(await run(edit, [piece("hello "), piece("there"), piece("", "stop")]))
    assert "".join(c["text"] for b in out for c in b["choices"]) == "HELLO THERE"
    assert out[-1]["choices"][0]["finish_reason"] == "stop"
