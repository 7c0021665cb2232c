"""Actions, pseudonyms, restore and findings, through the guard as the pipeline calls it."""

from __future__ import annotations

import re

import pytest

from rails.base import Blocked, GuardContext, Stage
from rails.pii.actions import PLACEHOLDER, apply_actions, placeholder_for, restore
from rails.pii.guard import PiiGuard
from rails.pii.options import Action, PiiOptions
from rails.pii.spans import Span, resolve_overlaps
from rails.pii.testing import make_ctx, shared_engine

EMAIL = "amaka.obi@example.ng"
CARD = "4111 1111 1111 1111"


def guard(**options: object) -> PiiGuard:
    return PiiGuard(shared_engine(), PiiOptions(**options))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "text", "expected"),
    [
        ({}, f"mail {EMAIL} now", "mail <EMAIL_ADDRESS> now"),
        ({}, "nothing here", "nothing here"),
        ({"action": "mask"}, f"card {CARD}.", "card ***************1111."),
        ({"action": "mask", "mask_keep": 0}, f"card {CARD}.", "card *******************."),
        ({"action": "hash"}, f"mail {EMAIL}", r"mail <EMAIL_ADDRESS:[0-9a-f]{12}>"),
        ({"action": "pseudonymize"}, f"mail {EMAIL}", r"mail <EMAIL_ADDRESS_[0-9a-f]{6}>"),
        (
            {"actions": {"CREDIT_CARD": "mask"}},
            f"{EMAIL} paid with {CARD}",
            "<EMAIL_ADDRESS> paid with ***************1111",
        ),
        ({"entities": ("CREDIT_CARD",)}, f"{EMAIL} paid with {CARD}", f"{EMAIL} paid with <CREDIT_CARD>"),
        ({"allow": ("AMAKA.OBI@example.ng",)}, f"mail {EMAIL}", f"mail {EMAIL}"),
        ({"allow_patterns": (r".*@example\.ng",)}, f"mail {EMAIL}", f"mail {EMAIL}"),
        ({"allow_patterns": (r"example\.ng",)}, f"mail {EMAIL}", "mail <EMAIL_ADDRESS>"),  # must match all
    ],
)  # fmt: skip
async def test_actions(options: dict[str, object], text: str, expected: str) -> None:
    out = await guard(**options).check(text, "input", make_ctx())
    assert re.fullmatch(expected, out) if "[" in expected else out == expected


@pytest.mark.parametrize(("stage", "noun"), [("input", "prompt"), ("output", "answer")])
async def test_block_names_the_entity_never_the_value(stage: Stage, noun: str) -> None:
    ctx = make_ctx()
    with pytest.raises(Blocked) as info:
        await guard(actions={"CREDIT_CARD": "block"}).check(f"{EMAIL} card {CARD}", stage, ctx)
    assert info.value.guard == "pii"
    assert info.value.reason == f"{noun} contains CREDIT_CARD"
    assert CARD not in str(info.value) and EMAIL not in str(info.value)
    assert [(f.entity, f.action) for f in ctx.findings] == [("CREDIT_CARD", "blocked")]


async def test_findings_carry_position_score_and_action_but_never_the_value() -> None:
    ctx = make_ctx()
    text = f"mail {EMAIL} or call +234 803 123 4567, card {CARD}"
    await guard(actions={"PHONE_NUMBER": "hash", "CREDIT_CARD": "pseudonymize"}).check(
        text, "input", ctx
    )
    assert [(f.guard, f.entity, text[f.start : f.end], f.action) for f in ctx.findings] == [
        ("pii", "EMAIL_ADDRESS", EMAIL, "redacted"),
        ("pii", "PHONE_NUMBER", "+234 803 123 4567", "hashed"),
        ("pii", "CREDIT_CARD", CARD, "pseudonymized"),
    ]
    assert all(0.5 <= f.score <= 1.0 for f in ctx.findings)
    for value in (EMAIL, "+234 803 123 4567", "803 123 4567", CARD, "1111"):
        assert value not in repr(ctx.findings)


async def test_shadow_reports_without_changing_or_blocking() -> None:
    ctx = make_ctx()
    shadow = PiiGuard(shared_engine(), PiiOptions(action="block"), shadow=True)
    text = f"mail {EMAIL}"
    assert await shadow.check(text, "input", ctx) is text
    assert [(f.entity, f.action) for f in ctx.findings] == [("EMAIL_ADDRESS", "reported")]
    assert ctx.vault == {}


async def pseudonymize(text: str, ctx: GuardContext) -> str:
    return await guard(action="pseudonymize").check(text, "input", ctx)


async def test_pseudonyms_are_stable_per_tenant_across_requests() -> None:
    first, second = make_ctx("acme", request="r1"), make_ctx("acme", request="r2")
    turn1 = await pseudonymize(f"I am {EMAIL}", first)
    turn2 = await pseudonymize(f"I am {EMAIL}. Again: {EMAIL}", second)
    placeholder = turn1.removeprefix("I am ")
    assert PLACEHOLDER.fullmatch(placeholder)
    assert turn2 == f"I am {placeholder}. Again: {placeholder}"
    assert first.vault == second.vault == {placeholder: EMAIL}


async def test_pseudonyms_differ_across_tenants_and_values() -> None:
    acme, globex = make_ctx("acme"), make_ctx("globex")
    a = await pseudonymize(f"{EMAIL} and other@example.ng", acme)
    b = await pseudonymize(f"{EMAIL} and other@example.ng", globex)
    assert a != b
    assert len(set(acme.vault)) == 2 and set(acme.vault).isdisjoint(globex.vault)


async def test_hash_is_keyed_per_tenant() -> None:
    text = f"mail {EMAIL}"
    acme1 = await guard(action="hash").check(text, "input", make_ctx("acme"))
    acme2 = await guard(action="hash").check(text, "input", make_ctx("acme"))
    globex = await guard(action="hash").check(text, "input", make_ctx("globex"))
    assert acme1 == acme2 != globex


async def test_output_stage_pseudonyms_are_not_recorded_for_restore() -> None:
    ctx = make_ctx()
    out = await guard(action="pseudonymize").check(f"the CEO is ceo@{'corp'}.com", "output", ctx)
    assert PLACEHOLDER.search(out) and ctx.vault == {}
    assert restore(out, ctx.vault) == out


async def test_restore_uses_only_this_requests_vault() -> None:
    mine, theirs = make_ctx("acme"), make_ctx("globex")
    prompt = await pseudonymize(f"I am {EMAIL}", mine)
    other = await pseudonymize("I am zed@example.ng", theirs)
    mine_ph, their_ph = prompt.removeprefix("I am "), other.removeprefix("I am ")
    answer = f"Hello {mine_ph}! Not {their_ph}, not <EMAIL_ADDRESS_000000>, and 2 < 3."
    assert restore(answer, mine.vault) == (
        f"Hello {EMAIL}! Not {their_ph}, not <EMAIL_ADDRESS_000000>, and 2 < 3."
    )
    assert restore(answer, {}) == answer


def test_a_placeholder_collision_lengthens_the_digest() -> None:
    ctx = make_ctx()
    short = placeholder_for("EMAIL_ADDRESS", EMAIL, make_ctx())
    ctx.vault[short] = "someone-else@example.ng"
    longer = placeholder_for("EMAIL_ADDRESS", EMAIL, ctx)
    assert longer != short and longer.startswith(short[:-1]) and ctx.vault[longer] == EMAIL


@pytest.mark.parametrize(
    ("spans", "kept"),
    [
        ([Span("A", 0, 5, 0.6), Span("B", 2, 8, 0.9)], [Span("B", 2, 8, 0.9)]),
        ([Span("A", 0, 5, 0.9), Span("B", 0, 8, 0.9)], [Span("B", 0, 8, 0.9)]),
        (
            [Span("A", 0, 3, 0.5), Span("B", 3, 6, 0.5)],
            [Span("A", 0, 3, 0.5), Span("B", 3, 6, 0.5)],
        ),
    ],
)
def test_overlaps_keep_highest_score_then_longest(spans: list[Span], kept: list[Span]) -> None:
    assert list(resolve_overlaps(spans)) == kept


@pytest.mark.parametrize("action", ["redact", "mask", "hash", "pseudonymize"])
def test_overlapping_spans_are_rewritten_once(action: Action) -> None:
    ctx = make_ctx()
    text = "0123456789"
    spans = [Span("X", 0, 6, 0.6), Span("Y", 4, 10, 0.9)]
    out = apply_actions(text, spans, PiiOptions(action=action), ctx, "input")
    assert out.startswith("0123") and "456789" not in out
    assert [f.entity for f in ctx.findings] == ["Y"]
