"""`gateway.sse`: re-cutting arbitrary byte chunks into events, and reading an event's data."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterable

import pytest

from gateway.sse import DONE, data_of, encode, split_events

EVENTS = [
    b'data: {"id":"c1","choices":[{"delta":{"content":"he"}}]}\n\n',
    b": keep-alive comment\n\n",
    b"event: message\nid: 7\ndata: first line\ndata: second line\n\n",
    b'data:{"no":"space"}\n\n',
    DONE,
]
STREAM = b"".join(EVENTS)
CRLF_STREAM = STREAM.replace(b"\n", b"\r\n")


async def _chunks(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def split(parts: Iterable[bytes]) -> list[bytes]:
    return [event async for event in split_events(_chunks(parts))]


def cut(data: bytes, *points: int) -> list[bytes]:
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


async def test_whole_stream_in_one_chunk() -> None:
    assert await split([STREAM]) == EVENTS


@pytest.mark.parametrize("point", range(len(STREAM) + 1))
async def test_every_single_cut_point(point: int) -> None:
    assert await split(cut(STREAM, point)) == EVENTS


async def test_every_pair_of_cut_points() -> None:
    for a in range(0, len(STREAM) + 1, 3):
        for b in range(a, len(STREAM) + 1, 5):
            assert await split(cut(STREAM, a, b)) == EVENTS, (a, b)


async def test_one_byte_chunks_and_empty_chunks() -> None:
    parts = [bytes([b]) for b in STREAM]
    interleaved = [p for part in parts for p in (b"", part)]
    assert await split(parts) == EVENTS
    assert await split(interleaved) == EVENTS


@pytest.mark.parametrize("point", range(len(CRLF_STREAM) + 1))
async def test_crlf_normalised_at_every_cut_point(point: int) -> None:
    """Includes the cuts between a CR and its LF (`…\\r` | `\\n…`)."""
    assert await split(cut(CRLF_STREAM, point)) == EVENTS


async def test_crlf_split_between_cr_and_lf_of_the_blank_line() -> None:
    first = b"data: a\r\n\r"
    second = b"\ndata: b\n\n"  # no CR in this chunk at all
    assert await split([first, second]) == [b"data: a\n\n", b"data: b\n\n"]


async def test_crlf_one_byte_chunks() -> None:
    assert await split([bytes([b]) for b in CRLF_STREAM]) == EVENTS


async def test_comment_events_are_yielded_and_carry_no_data() -> None:
    events = await split([b": ping\n\n", b"data: x\n\n", b": pong\n\n"])
    assert events == [b": ping\n\n", b"data: x\n\n", b": pong\n\n"]
    assert [data_of(e) for e in events] == [None, b"x", None]


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (b"data: last", b"data: last\n\n"),
        (b"data: last\n", b"data: last\n\n"),
        (b"data: last\r\n", b"data: last\n\n"),
        (b": only a comment", b": only a comment\n\n"),
    ],
)
async def test_trailing_event_without_blank_line_is_yielded(tail: bytes, expected: bytes) -> None:
    assert await split([b"data: a\n\n", tail]) == [b"data: a\n\n", expected]


async def test_extra_blank_lines_yield_no_empty_events() -> None:
    events = await split([b"\n\n", b"data: a\n\n\n\n", b"\n\n", b"data: b\n\n", b"\n"])
    assert [data_of(e) for e in events] == [b"a", b"b"]


async def test_nothing_in_nothing_out() -> None:
    assert await split([]) == []
    assert await split([b"", b"\n", b"\n\n"]) == []


@pytest.mark.parametrize(
    ("event", "data"),
    [
        (b"data: x\n\n", b"x"),
        (b"data:x\n\n", b"x"),
        (b"data:  two spaces\n\n", b" two spaces"),
        (b"data: a\ndata: b\ndata: c\n\n", b"a\nb\nc"),
        (b"data: a\ndata:\ndata: c\n\n", b"a\n\nc"),
        (b"event: error\ndata: {}\n\n", b"{}"),
        (b"id: 1\nretry: 10\ndata: payload\n\n", b"payload"),
        (b"data: payload\nid: 1\n\n", b"payload"),
        (b": comment\ndata: x\n\n", b"x"),
        (b"data: [DONE]\n\n", b"[DONE]"),
        (b"data: \n\n", b""),
        (b": just a comment\n\n", None),
        (b": one\n: two\n\n", None),
        (b"event: ping\n\n", None),
        (b"id: 3\n\n", None),
    ],
)
def test_data_of(event: bytes, data: bytes | None) -> None:
    assert data_of(event) == data


def test_data_of_agrees_with_split_events_output() -> None:
    assert [data_of(e) for e in EVENTS] == [
        b'{"id":"c1","choices":[{"delta":{"content":"he"}}]}',
        None,
        b"first line\nsecond line",
        b'{"no":"space"}',
        b"[DONE]",
    ]


def test_encode_round_trips() -> None:
    assert encode(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert encode(b"{}", event="error") == b"event: error\ndata: {}\n\n"
    assert data_of(encode(b'{"a":1}')) == b'{"a":1}'
    assert data_of(encode(b"x", event="e")) == b"x"
    assert data_of(DONE) == b"[DONE]"
