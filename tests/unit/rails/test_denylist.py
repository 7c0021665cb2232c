"""The denylist guard: whole-word terms, patterns with a time limit, and streams."""

from __future__ import annotations

import pytest

from rails.base import Blocked, StreamFilter
from rails.denylist import (
    MAX_PATTERN_CHARS,
    DenylistGuard,
    DenylistOptions,
    compile_pattern,
    denylist_problems,
)
from rails.testing import feed_all, make_ctx, splits

TERMS = DenylistOptions(terms=("falcon", "Project X", "c++", "drop table"))


@pytest.mark.parametrize(
    ("text", "blocked"),
    [
        ("we ship falcon today", True),
        ("FALCON", True),
        ("Falcon.", True),
        ("(falcon)", True),
        ("about project x soon", True),
        ("I write C++ daily", True),
        ("x; DROP TABLE users", True),
        ("falcons are birds", False),
        ("the falconer", False),
        ("project xy", False),
        ("drop  table", False),
        ("dropping tables", False),
        ("", False),
        ("nothing to see", False),
        ("café falcon_x", False),
        ("ökofalcon", False),
    ],
)
async def test_terms_match_whole_words_case_insensitively(text: str, blocked: bool) -> None:
    guard, ctx = DenylistGuard(TERMS), make_ctx()
    if blocked:
        with pytest.raises(Blocked) as info:
            await guard.check(text, "input", ctx)
        assert info.value.guard == "denylist"
        assert info.value.code == "content_filter"
    else:
        assert await guard.check(text, "output", ctx) == text
        assert ctx.findings == []


async def test_a_block_records_where_but_never_what() -> None:
    guard, ctx = DenylistGuard(TERMS), make_ctx()
    with pytest.raises(Blocked) as info:
        await guard.check("we ship falcon today", "input", ctx)
    assert "falcon" not in str(info.value).lower()
    [finding] = ctx.findings
    assert (finding.guard, finding.entity, finding.start, finding.end) == (
        "denylist",
        "term",
        8,
        14,
    )
    assert finding.action == "blocked"
    assert "falcon" not in repr(finding)


@pytest.mark.parametrize(
    ("text", "blocked"),
    [
        ("order ORDER-1234 shipped", True),
        ("ORDER-12", False),
        ("order-1234", False),
    ],
)
async def test_patterns_match_as_written(text: str, blocked: bool) -> None:
    guard, ctx = DenylistGuard(DenylistOptions(patterns=(r"ORDER-\d{4}",))), make_ctx()
    if blocked:
        with pytest.raises(Blocked):
            await guard.check(text, "input", ctx)
        assert ctx.findings[0].entity == "pattern[0]"
    else:
        assert await guard.check(text, "input", ctx) == text


async def test_a_pathological_pattern_times_out_instead_of_stalling() -> None:
    guard = DenylistGuard(DenylistOptions(patterns=(r"(a|aa)+$",)))
    with pytest.raises(TimeoutError):
        await guard.check("a" * 60 + "b", "input", make_ctx())


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(", "Invalid regular expression"),
        ("a*", "Pattern matches the empty string"),
        ("a" * (MAX_PATTERN_CHARS + 1), "Pattern longer than 1000 characters"),
    ],
)
def test_compile_pattern_refuses_bad_patterns(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        compile_pattern(pattern)


def test_compile_pattern_accepts_empty_matches_when_asked() -> None:
    assert compile_pattern(r"\d*", allow_empty=True).fullmatch("123")


def test_problems_name_each_bad_entry() -> None:
    assert denylist_problems(DenylistOptions()) == [("", "Expected at least one term or pattern")]
    options = DenylistOptions(terms=("ok", "  "), patterns=("fine", "[", "x?"))
    assert [path for path, _ in denylist_problems(options)] == [
        ".terms[1]",
        ".patterns[1]",
        ".patterns[2]",
    ]


# --- streams ---------------------------------------------------------------------------


async def _run(stream: StreamFilter, chunks: list[str]) -> tuple[str, bool]:
    """Feed until the end or a block; returns (emitted text, blocked)."""
    out: list[str] = []
    try:
        for chunk in chunks:
            out.append(await stream.feed(chunk))
        out.append(await stream.flush())
    except Blocked:
        return "".join(out), True
    return "".join(out), False


@pytest.mark.parametrize(
    "text",
    ["we ship Falcon today", "falcon", "say falcon", "see drop table now", "a c++ b"],
)
async def test_a_term_split_at_any_position_is_blocked_before_any_of_it_leaks(text: str) -> None:
    guard = DenylistGuard(TERMS)
    start = next(
        i for i in range(len(text)) if text.lower().startswith(("falcon", "drop", "c++"), i)
    )
    for chunks in splits(text):
        emitted, blocked = await _run(guard.open_stream(make_ctx()), chunks)
        assert blocked, chunks
        assert text.startswith(emitted)
        assert len(emitted) <= start, chunks


@pytest.mark.parametrize("text", ["falconer and falcons", "badge", "x falco", "c+ +", ""])
async def test_clean_text_streams_through_unchanged_at_any_split(text: str) -> None:
    guard = DenylistGuard(TERMS)
    for chunks in splits(text):
        assert await feed_all(guard.open_stream(make_ctx()), chunks) == text


async def test_the_stream_holds_back_only_the_longest_term() -> None:
    guard = DenylistGuard(DenylistOptions(terms=("abcd", "xy")))
    stream = guard.open_stream(make_ctx())
    assert await stream.feed("hello ") == "he"
    assert await stream.feed("world") == "llo w"
    assert await stream.flush() == "orld"


async def test_a_stream_block_reports_the_offset_in_the_whole_answer() -> None:
    text = "0123456789 falcon!"
    for chunks in splits(text):
        ctx = make_ctx()
        await _run(DenylistGuard(TERMS).open_stream(ctx), chunks)
        assert [(f.start, f.end) for f in ctx.findings] == [(11, 17)], chunks


async def test_a_pattern_split_at_any_position_is_blocked() -> None:
    guard = DenylistGuard(DenylistOptions(patterns=(r"ORDER-\d{4}",), stream_window=16))
    text = "ref ORDER-1234 ok"
    for chunks in splits(text):
        emitted, blocked = await _run(guard.open_stream(make_ctx()), chunks)
        assert blocked, chunks
        assert "ORDER-1234" not in emitted
    for chunks in splits("ref ORDER-12 ok"):
        assert await feed_all(guard.open_stream(make_ctx()), chunks) == "ref ORDER-12 ok"


async def test_filters_are_independent_per_stream() -> None:
    guard, ctx = DenylistGuard(TERMS), make_ctx()
    first, second = guard.open_stream(ctx), guard.open_stream(ctx)
    await first.feed("fal")
    assert await feed_all(second, ["con-free ", "text"]) == "con-free text"
    with pytest.raises(Blocked):
        await feed_all(first, ["con "])
