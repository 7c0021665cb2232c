"""GuardPipeline and GuardRegistry, driven with FakeGuards (no PII engine needed)."""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from rails.base import Blocked, GuardContext, GuardFailed, Stage, StreamFilter
from rails.denylist import DenylistGuard, DenylistOptions
from rails.pii.guard import PiiGuard
from rails.pipeline import GuardPipeline, GuardSlot
from rails.policy import Policy, parse_policy
from rails.registry import KINDS, GuardKind, GuardRegistry
from rails.testing import FakeGuard, feed_all, make_ctx, splits


class TextOnlyGuard:
    """A guard without stream support (like a NeMo guard may be)."""

    name = "text-only"

    async def check(self, text: str, stage: Stage, ctx: GuardContext) -> str:
        return text


@dataclass
class FakeRestorer:
    """Replaces each vault placeholder by its value; records calls."""

    calls: list[str] = field(default_factory=list)

    def restore(self, text: str, vault: dict[str, str]) -> str:
        self.calls.append(text)
        for placeholder, value in vault.items():
            text = text.replace(placeholder, value)
        return text

    def open_stream(self, vault: dict[str, str]) -> StreamFilter:
        return FakeGuard("restore", rewrite=dict(vault)).open_stream(make_ctx())


def slots(*guards: FakeGuard, **policy: object) -> list[GuardSlot]:
    return [GuardSlot(g, **policy) for g in guards]  # type: ignore[arg-type]


# --- run: order, chaining, stages ---------------------------------------------------------


async def test_guards_run_in_order_and_each_sees_the_previous_output() -> None:
    journal: list[str] = []
    a = FakeGuard("a", rewrite={"one": "two"}, journal=journal)
    b = FakeGuard("b", rewrite={"two": "three"}, journal=journal)
    pipeline = GuardPipeline(slots(a, b))
    texts = ["one", "x one"]
    assert await pipeline.run("input", texts, make_ctx()) == ["three", "x three"]
    assert texts == ["one", "x one"]
    assert journal == ["a:input:one", "a:input:x one", "b:input:two", "b:input:x two"]


async def test_each_stage_runs_only_its_own_guards() -> None:
    a, b = FakeGuard("in", rewrite={"q": "Q"}), FakeGuard("out", rewrite={"q": "!"})
    pipeline = GuardPipeline(slots(a), slots(b))
    ctx = make_ctx()
    assert await pipeline.run("input", ["q"], ctx) == ["Q"]
    assert await pipeline.run("output", ["q"], ctx) == ["!"]
    assert (a.calls, b.calls) == (["in:input:q"], ["out:output:q"])
    with pytest.raises(ValueError, match="unknown stage"):
        await pipeline.run("sideways", ["q"], ctx)  # type: ignore[arg-type]


async def test_blocked_propagates_and_stops_later_guards() -> None:
    a, b = FakeGuard("a", block_on="bad"), FakeGuard("b")
    with pytest.raises(Blocked) as info:
        await GuardPipeline(slots(a, b)).run("input", ["ok", "so bad"], make_ctx())
    assert info.value.guard == "a"
    assert b.calls == []


async def test_empty_stages_are_reported_so_the_gateway_can_skip_them() -> None:
    empty = GuardPipeline()
    assert (empty.has_input, empty.has_output, empty.stream_capable) == (False, False, True)
    assert await empty.run("input", ["x"], make_ctx()) == ["x"]
    assert empty.open_stream(make_ctx()) is None
    only_in = GuardPipeline(slots(FakeGuard()))
    assert (only_in.has_input, only_in.has_output) == (True, False)
    restoring = GuardPipeline(restorer=FakeRestorer())
    assert (restoring.has_input, restoring.has_output) == (False, True)


def test_a_non_guard_is_refused_when_building() -> None:
    with pytest.raises(TypeError, match="not a TextGuard"):
        GuardPipeline([GuardSlot(object())])  # type: ignore[arg-type]


# --- failure policy --------------------------------------------------------------------


async def test_timeout_with_on_error_block_fails_closed() -> None:
    slow = FakeGuard("slow", delay_s=5)
    pipeline = GuardPipeline(slots(slow, timeout_s=0.01))
    with pytest.raises(GuardFailed) as info:
        await pipeline.run("input", ["x"], make_ctx())
    assert (info.value.guard, info.value.reason) == ("slow", "timed out after 0.01 s")
    assert pipeline.errors == {("slow", "timeout"): 1}


async def test_timeout_with_on_error_allow_skips_the_guard(
    caplog: pytest.LogCaptureFixture,
) -> None:
    slow = FakeGuard("slow", delay_s=5, rewrite={"secret": "[x]"})
    after = FakeGuard("after", rewrite={"b": "B"})
    pipeline = GuardPipeline([GuardSlot(slow, on_error="allow", timeout_s=0.01), GuardSlot(after)])
    with caplog.at_level(logging.WARNING, logger="rails.pipeline"):
        out = await pipeline.run("input", ["a secret b"], make_ctx(request_id="req-7"))
    assert out == ["a secret B"]
    assert pipeline.errors == {("slow", "timeout"): 1}
    [record] = caplog.records
    assert "slow" in record.getMessage() and "req-7" in record.getMessage()
    assert "secret" not in record.getMessage()


async def test_error_with_on_error_block_fails_closed_and_keeps_the_cause() -> None:
    broken = FakeGuard("broken", error=RuntimeError("boom: my secret prompt"))
    with pytest.raises(GuardFailed) as info:
        await GuardPipeline(slots(broken)).run("input", ["x"], make_ctx())
    assert (info.value.guard, info.value.reason) == ("broken", "RuntimeError")
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "secret" not in str(info.value)


async def test_error_with_on_error_allow_leaves_no_trace(caplog: pytest.LogCaptureFixture) -> None:
    class HalfWay(FakeGuard):
        async def check(self, text: str, stage: Stage, ctx: GuardContext) -> str:
            if text == "second":
                raise ValueError(text)
            return await super().check(text, stage, ctx)

    guard = HalfWay("half", rewrite={"first": "<P_1>"}, vault={"<P_1>": "first"})
    ctx = make_ctx(vault={"<OLD_1>": "old"})
    pipeline = GuardPipeline(slots(guard, on_error="allow"))
    with caplog.at_level(logging.WARNING, logger="rails.pipeline"):
        assert await pipeline.run("input", ["first", "second"], ctx) == ["first", "second"]
    assert ctx.findings == []
    assert ctx.vault == {"<OLD_1>": "old"}
    assert pipeline.errors == {("half", "error"): 1}
    assert "ValueError" in caplog.records[0].getMessage()
    assert "second" not in caplog.text


@pytest.mark.parametrize("inline", [True, False])
async def test_a_slot_without_deadline_keeps_the_failure_policy(inline: bool) -> None:
    """Inline guards (and `timeout_s: None`) skip the deadline: same results otherwise."""

    class Inline(FakeGuard):
        inline = True  # never awaits: no deadline is armed

    kind = Inline if inline else FakeGuard
    timeout = 1.0 if inline else None
    ok = kind("ok", rewrite={"a": "A"})
    ctx = make_ctx()
    pipeline = GuardPipeline([GuardSlot(ok, timeout_s=timeout)])
    assert pipeline.input[0].deadline_s is None
    assert await pipeline.run("input", ["a", "b"], ctx) == ["A", "b"]
    assert [f.action for f in ctx.findings] == ["redacted"]
    assert ok.calls == ["ok:input:a", "ok:input:b"] and ctx.timings_ms["ok"] >= 0
    broken = kind("broken", error=RuntimeError("boom"))
    allow = GuardPipeline([GuardSlot(broken, on_error="allow", timeout_s=timeout)])
    assert await allow.run("input", ["x"], make_ctx()) == ["x"]
    assert allow.errors == {("broken", "error"): 1}
    with pytest.raises(GuardFailed):
        await GuardPipeline([GuardSlot(broken, timeout_s=timeout)]).run("input", ["x"], ctx)
    with pytest.raises(Blocked):
        blocker = kind("blocker", block_on="x")
        await GuardPipeline([GuardSlot(blocker, timeout_s=timeout)]).run("input", ["x"], ctx)


# --- shadow ----------------------------------------------------------------------------


async def test_shadow_never_changes_text_but_reports_findings() -> None:
    guard = FakeGuard("pii", rewrite={"a@b.c": "<EMAIL_1>"}, vault={"<EMAIL_1>": "a@b.c"})
    ctx = make_ctx()
    pipeline = GuardPipeline(slots(guard, shadow=True))
    assert await pipeline.run("input", ["mail a@b.c"], ctx) == ["mail a@b.c"]
    assert [(f.guard, f.start, f.end, f.action) for f in ctx.findings] == [
        ("pii", 5, 10, "reported")
    ]
    assert ctx.vault == {}


async def test_shadow_never_blocks() -> None:
    quiet = FakeGuard("quiet", block_on="bad")
    ctx = make_ctx()

    class Silent(FakeGuard):
        async def check(self, text: str, stage: Stage, ctx: GuardContext) -> str:
            raise Blocked(self.name, "no", code="policy_violation")

    pipeline = GuardPipeline(output=slots(quiet, Silent("silent"), shadow=True))
    assert await pipeline.run("output", ["so bad", "fine"], ctx) == ["so bad", "fine"]
    assert [(f.guard, f.entity, f.start, f.end, f.action) for f in ctx.findings] == [
        ("quiet", "FAKE", 3, 6, "reported"),
        ("silent", "policy_violation", 0, 6, "reported"),
        ("silent", "policy_violation", 0, 4, "reported"),
    ]
    assert quiet.calls == ["quiet:output:so bad", "quiet:output:fine"]


async def test_shadow_guard_errors_never_fail_the_call() -> None:
    pipeline = GuardPipeline(
        [GuardSlot(FakeGuard("x", error=RuntimeError()), shadow=True, on_error="block")]
    )
    assert await pipeline.run("input", ["t"], make_ctx()) == ["t"]
    assert pipeline.errors == {("x", "error"): 1}


# --- timings ---------------------------------------------------------------------------


async def test_timings_accumulate_per_guard_across_texts_and_stages() -> None:
    slow, quick = FakeGuard("slow", delay_s=0.01), FakeGuard("quick")
    pipeline = GuardPipeline(slots(slow, quick), slots(slow))
    ctx = make_ctx()
    await pipeline.run("input", ["a", "b"], ctx)
    assert set(ctx.timings_ms) == {"slow", "quick"}
    assert ctx.timings_ms["slow"] >= 20
    first = ctx.timings_ms["slow"]
    await pipeline.run("output", ["c"], ctx)
    assert ctx.timings_ms["slow"] >= first + 10


async def test_a_failed_guard_still_records_its_time() -> None:
    ctx = make_ctx()
    pipeline = GuardPipeline(slots(FakeGuard("slow", delay_s=1), on_error="allow", timeout_s=0.02))
    await pipeline.run("input", ["a"], ctx)
    assert ctx.timings_ms["slow"] >= 20


# --- restore ---------------------------------------------------------------------------


async def test_output_restores_pseudonyms_after_every_output_guard() -> None:
    restorer = FakeRestorer()
    pseudo = FakeGuard("pii", rewrite={"ann@x.io": "<E_1>"}, vault={"<E_1>": "ann@x.io"})
    out_guard = FakeGuard("out", block_on="ann@x.io")
    pipeline = GuardPipeline(slots(pseudo), slots(out_guard), restorer=restorer)
    ctx = make_ctx()
    assert await pipeline.run("input", ["to ann@x.io"], ctx) == ["to <E_1>"]
    assert restorer.calls == []
    assert await pipeline.run("output", ["hi <E_1>"], ctx) == ["hi ann@x.io"]
    assert out_guard.calls == ["out:output:hi <E_1>"]


async def test_nothing_is_restored_when_the_vault_is_empty() -> None:
    restorer = FakeRestorer()
    pipeline = GuardPipeline(restorer=restorer)
    assert await pipeline.run("output", ["<E_1>"], make_ctx()) == ["<E_1>"]
    assert restorer.calls == []


async def test_a_failing_restore_is_a_guard_failure() -> None:
    class Broken(FakeRestorer):
        def restore(self, text: str, vault: dict[str, str]) -> str:
            raise KeyError(text)

    pipeline = GuardPipeline(restorer=Broken())
    with pytest.raises(GuardFailed) as info:
        await pipeline.run("output", ["x"], make_ctx(vault={"<E_1>": "v"}))
    assert (info.value.guard, info.value.reason) == ("restore", "KeyError")


# --- streams ---------------------------------------------------------------------------


async def test_stream_chains_filters_in_order() -> None:
    journal: list[str] = []
    a = FakeGuard("a", rewrite={"xy": "Z"}, journal=journal)
    b = FakeGuard("b", rewrite={"Z": "W"}, journal=journal)
    stream = GuardPipeline(output=slots(a, b)).open_stream(make_ctx())
    assert stream is not None
    assert await stream.feed("1x") == "1"
    assert await stream.feed("y2") == "W"
    assert await stream.flush() == "2"
    assert journal == [
        "a:feed:1x",
        "b:feed:1",
        "a:feed:y2",
        "b:feed:Z",
        "a:flush",
        "b:feed:2",
        "b:flush",
    ]


async def test_flush_feeds_each_result_into_the_next_filter_before_flushing_it() -> None:
    journal: list[str] = []
    a = FakeGuard("a", rewrite={"abc": "q"}, journal=journal)
    b = FakeGuard("b", rewrite={"qab": "!"}, journal=journal)
    stream = GuardPipeline(output=slots(a, b)).open_stream(make_ctx())
    assert stream is not None
    assert await stream.feed("abcab") == ""
    assert journal == ["a:feed:abcab", "b:feed:q"]
    assert await stream.flush() == "!"
    assert journal[2:] == ["a:flush", "b:feed:ab", "b:flush"]


@pytest.mark.parametrize("text", ["say foo now", "foofoo", "fo", "", "bar foo"])
async def test_a_chained_stream_matches_the_whole_text_result_at_every_split(text: str) -> None:
    a, b = FakeGuard("a", rewrite={"foo": "bar"}), FakeGuard("b", rewrite={"bar": "baz!"})
    pipeline = GuardPipeline(output=slots(a, b))
    for chunks in splits(text):
        stream = pipeline.open_stream(make_ctx())
        assert stream is not None
        assert await feed_all(stream, chunks) == text.replace("foo", "bar").replace("bar", "baz!")


async def test_a_block_mid_stream_raises_from_feed_and_leaks_nothing() -> None:
    rewrite = FakeGuard("a", rewrite={"x": "y"})
    blocker = FakeGuard("b", block_on="secret")
    pipeline = GuardPipeline(output=slots(rewrite, blocker))
    for chunks in splits("my secret plan"):
        stream = pipeline.open_stream(make_ctx())
        assert stream is not None
        emitted: list[str] = []
        with pytest.raises(Blocked) as info:
            for chunk in chunks:
                emitted.append(await stream.feed(chunk))
            emitted.append(await stream.flush())
        assert info.value.guard == "b"
        assert "secret" not in "".join(emitted)
        assert "s" not in "".join(emitted).replace("my", "")


async def test_a_block_in_flush_surfaces_from_flush() -> None:
    denylist = DenylistGuard(DenylistOptions(terms=("end",)))
    stream = GuardPipeline(output=[GuardSlot(FakeGuard("a")), GuardSlot(denylist)]).open_stream(
        make_ctx()
    )
    assert stream is not None
    assert await stream.feed("the en") == "the"
    assert await stream.feed("d") == " "
    with pytest.raises(Blocked) as info:
        await stream.flush()
    assert info.value.guard == "denylist"


async def test_stream_ends_with_restore_when_the_vault_is_filled() -> None:
    restorer = FakeRestorer()
    pipeline = GuardPipeline(output=slots(FakeGuard("a", rewrite={"to": "TO"})), restorer=restorer)
    ctx = make_ctx(vault={"<e_1>": "ann@x.io"})
    for chunks in splits("to <e_1>."):
        stream = pipeline.open_stream(ctx)
        assert stream is not None
        assert await feed_all(stream, chunks) == "TO ann@x.io."


async def test_open_stream_returns_none_when_there_is_nothing_to_do() -> None:
    pipeline = GuardPipeline(slots(FakeGuard()), restorer=FakeRestorer())
    assert pipeline.open_stream(make_ctx()) is None
    only_restore = pipeline.open_stream(make_ctx(vault={"<E_1>": "v"}))
    assert only_restore is not None
    assert await feed_all(only_restore, ["<E", "_1>"]) == "v"


def test_a_pipeline_with_a_text_only_output_guard_cannot_stream() -> None:
    pipeline = GuardPipeline(
        [GuardSlot(TextOnlyGuard())], [GuardSlot(FakeGuard()), GuardSlot(TextOnlyGuard())]
    )
    assert pipeline.stream_capable is False
    assert pipeline.unstreamable == ("text-only",)
    with pytest.raises(TypeError, match="text-only"):
        pipeline.open_stream(make_ctx())
    assert GuardPipeline([GuardSlot(TextOnlyGuard())]).stream_capable is True


async def test_shadow_stream_passes_text_through_at_once_and_reports() -> None:
    ctx = make_ctx()
    guard = FakeGuard("pii", rewrite={"ann": "<P>"}, block_on="bad")
    stream = GuardPipeline(output=slots(guard, shadow=True)).open_stream(ctx)
    assert stream is not None
    assert await stream.feed("hi an") == "hi an"
    assert await stream.feed("n, bad") == "n, bad"
    assert await stream.feed(" more") == " more"
    assert await stream.flush() == ""
    assert [(f.guard, f.action) for f in ctx.findings] == [("pii", "reported")]
    assert guard.calls == ["pii:feed:hi an", "pii:feed:n, bad"]


async def test_stream_error_with_allow_passes_the_rest_through() -> None:
    ctx = make_ctx()
    pipeline = GuardPipeline(
        output=[GuardSlot(FakeGuard("x", error=RuntimeError()), on_error="allow")]
    )
    stream = pipeline.open_stream(ctx)
    assert stream is not None
    assert await feed_all(stream, ["a", "b"]) == "ab"
    assert pipeline.errors == {("x", "error"): 1}


async def test_stream_error_with_block_is_a_guard_failure() -> None:
    stream = GuardPipeline(output=slots(FakeGuard("x", error=OSError()))).open_stream(make_ctx())
    assert stream is not None
    with pytest.raises(GuardFailed, match="x: OSError"):
        await stream.feed("a")


def test_a_filter_that_cannot_open_follows_on_error() -> None:
    class NoStream(FakeGuard):
        def open_stream(self, ctx: GuardContext) -> StreamFilter:
            raise RuntimeError("x")

    allow = GuardPipeline(output=[GuardSlot(NoStream("n"), on_error="allow")])
    assert allow.open_stream(make_ctx()) is None
    assert allow.errors == {("n", "error"): 1}
    with pytest.raises(GuardFailed, match="n: RuntimeError"):
        GuardPipeline(output=[GuardSlot(NoStream("n"))]).open_stream(make_ctx())


async def test_stream_time_counts_towards_the_guard() -> None:
    ctx = make_ctx()
    stream = GuardPipeline(output=slots(FakeGuard("a"))).open_stream(ctx)
    assert stream is not None
    await feed_all(stream, ["a", "b"])
    assert ctx.timings_ms["a"] > 0


# --- registry ----------------------------------------------------------------------------


class CountOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    word: str = "bad"
    table: dict[str, str] = {}


def counting_kinds(built: list[CountOptions], engines: list[int]) -> dict[str, GuardKind[Any]]:
    def make_engine() -> int:
        engines.append(1)
        return len(engines)

    def build(options: CountOptions, shadow: bool, registry: GuardRegistry) -> FakeGuard:
        registry.engine("count-engine", make_engine)
        built.append(options)
        return FakeGuard("count", block_on=options.word)

    return {**KINDS, "count": GuardKind(CountOptions, build)}


def test_registry_builds_engines_once_and_guards_once_per_distinct_options() -> None:
    built: list[CountOptions] = []
    engines: list[int] = []
    registry = GuardRegistry(kinds=counting_kinds(built, engines))
    doc = {
        "input": [{"count": {"table": {"k": "v"}}}, {"count": {"word": "evil"}}],
        "output": [{"count": {"table": {"k": "v"}}}, {"count": {}, "shadow": True}],
    }
    first = parse_policy(doc, kinds=registry.kinds)
    second = parse_policy(doc, kinds=registry.kinds)
    p1, p2 = registry.pipeline(first), registry.pipeline(second)
    assert registry.pipeline(first) is p1
    assert p1 is not p2
    assert p1.input[0].guard is p1.output[0].guard is p2.input[0].guard
    assert [o.word for o in built] == ["bad", "evil", "bad"]
    assert engines == [1]
    assert p1.output[1].shadow and p1.output[1].guard is not p1.input[0].guard


def test_registry_slots_carry_the_policy_around_each_guard() -> None:
    registry = GuardRegistry()
    policy = parse_policy(
        {"output": [{"denylist": {"terms": ["x"]}, "on_error": "allow", "timeout_ms": 250}]}
    )
    pipeline = registry.pipeline(policy)
    [slot] = pipeline.output
    assert isinstance(slot.guard, DenylistGuard)
    assert (slot.shadow, slot.on_error, slot.timeout_s) == (False, "allow", 0.25)
    assert pipeline.restorer is None
    assert pipeline.errors is registry.errors
    assert pipeline.stream_capable


async def test_registry_pipelines_run_end_to_end() -> None:
    pipeline = GuardRegistry().pipeline(parse_policy({"input": [{"denylist": {"terms": ["x"]}}]}))
    with pytest.raises(Blocked):
        await pipeline.run("input", ["a", "x marks"], make_ctx())
    assert await pipeline.run("output", ["x"], make_ctx()) == ["x"]


def test_registry_forgets_a_pipeline_when_its_policy_is_gone() -> None:
    registry = GuardRegistry()
    policy = parse_policy({"input": [{"denylist": {"terms": ["x"]}}]})
    registry.pipeline(policy)
    assert len(registry._pipelines) == 1
    del policy
    gc.collect()
    assert registry._pipelines == {}


def test_registry_close_releases_engines() -> None:
    closed: list[str] = []

    class Engine:
        def close(self) -> None:
            closed.append("yes")

    registry = GuardRegistry()
    registry.engine("e", Engine)
    registry.close()
    assert closed == ["yes"]


def test_the_default_policy_needs_no_work() -> None:
    pipeline = GuardRegistry().pipeline(Policy())
    assert (pipeline.has_input, pipeline.has_output) == (False, False)


def test_importing_rails_does_not_import_presidio() -> None:
    code = "import rails, sys; print(sorted(m for m in sys.modules if 'presidio' in m))"
    root = Path(__file__).parents[3]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "[]"


# --- with the real PII guard -------------------------------------------------------------


async def test_the_registry_runs_the_real_pii_guard_and_restores_last() -> None:
    registry = GuardRegistry()
    policy = parse_policy(
        {
            "input": [{"pii": {"entities": ["EMAIL_ADDRESS"], "action": "pseudonymize"}}],
            "output": [{"denylist": {"terms": ["ann@example.com"]}}],
        }
    )
    pipeline = registry.pipeline(policy)
    assert isinstance(pipeline.input[0].guard, PiiGuard)
    assert pipeline.restorer is not None and pipeline.stream_capable
    ctx = make_ctx()
    [sent] = await pipeline.run("input", ["write to ann@example.com today"], ctx)
    assert "ann@example.com" not in sent
    [placeholder] = ctx.vault
    assert placeholder in sent
    assert ctx.timings_ms["pii"] > 0
    # The denylist sees the placeholder, not the value: restore runs after it.
    answer = f"I wrote to {placeholder}."
    assert await pipeline.run("output", [answer], ctx) == ["I wrote to ann@example.com."]
    for chunks in splits(answer):
        stream = pipeline.open_stream(ctx)
        assert stream is not None
        assert await feed_all(stream, chunks) == "I wrote to ann@example.com."
    other = registry.pipeline(parse_policy({"output": [{"pii": {"action": "redact"}}]}))
    assert other.output[0].guard is not pipeline.input[0].guard
    engines = [key for key in registry._engines if isinstance(key, tuple) and key[0] == "pii"]
    assert engines == [("pii", None)]
