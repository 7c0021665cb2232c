"""Streamed answers: entities and placeholders split anywhere must neither leak nor break.

Every case is fed split at every position into two deltas, and one character per
delta; the result must equal what the whole-text guard produces.
"""

from __future__ import annotations

import pytest

from rails.base import Blocked, StreamFilter
from rails.pii import stream as stream_module
from rails.pii.corpus import verhoeff_complete
from rails.pii.guard import PiiGuard
from rails.pii.options import CustomRecognizer, PiiOptions
from rails.pii.stream import STEP, WINDOW, RestoreFilter
from rails.pii.testing import make_ctx, shared_engine

BEFORE = (
    "Thanks for waiting. Here is what I found in the records you shared with me earlier today: "
)
AFTER = " Let me know if you need anything else (₦5,000 fee), I am happy to help with the rest."
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwi"
    "aWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKB\n"
    "UiAsUJmWiHkUTxDwKTxKmrZaN4+Id1R3xDkOcTIm2zqAn+I5wJSSwvIIcaZL3jBe\n"
    "-----END PRIVATE KEY-----"
)
NIN = verhoeff_complete("7012345678")
CASES = [
    ("email ", "amaka.obi@example.ng"),
    ("phone ", "+234 803 123 4567"),
    ("card ", "4111 1111 1111 1111"),
    ("IBAN ", "GB82 WEST 1234 5698 7654 32"),
    ("NIN ", NIN),
    ("BVN ", "22212345678"),
    ("key ", "sk-proj-Xy9_ab-CD3ef4GH5ij6KL7mn8OP9qr0ST1uv2WX3y"),
    ("aws ", "AKIAIOSFODNN7EXAMPLE"),
    ("token ", JWT),
    ("server ", "2001:db8::8a2e:370:7334"),
    ("key:\n", PEM),
]
IDS = ["email", "phone", "card", "iban", "nin", "bvn", "api_key", "aws", "jwt", "ipv6", "pem"]


async def collect(f: StreamFilter, pieces: list[str]) -> str:
    return "".join([await f.feed(p) for p in pieces]) + await f.flush()


@pytest.fixture(scope="module")
def guard() -> PiiGuard:
    return PiiGuard(shared_engine(), PiiOptions(action="pseudonymize"))


async def expected_and_ctx(guard: PiiGuard, text: str) -> str:
    return await guard.check(text, "output", make_ctx())


@pytest.mark.parametrize(("label", "value"), CASES, ids=IDS)
async def test_entity_split_at_every_position(guard: PiiGuard, label: str, value: str) -> None:
    text = BEFORE + label + value + AFTER
    expected = await expected_and_ctx(guard, text)
    assert value not in expected
    start = len(BEFORE) + len(label)
    for cut in range(max(0, start - 3), start + len(value) + 4):
        out = await collect(guard.open_stream(make_ctx()), [text[:cut], text[cut:]])
        assert out == expected, f"split at {cut}"


@pytest.mark.parametrize(("label", "value"), CASES, ids=IDS)
async def test_entity_one_character_at_a_time(guard: PiiGuard, label: str, value: str) -> None:
    text = BEFORE + label + value + AFTER + " " + BEFORE
    expected = await expected_and_ctx(guard, text)
    ctx = make_ctx()
    out = await collect(guard.open_stream(ctx), list(text))
    assert out == expected and value not in out
    whole = make_ctx()
    await guard.check(text, "output", whole)
    assert ctx.findings == whole.findings  # same entities, same offsets


async def test_every_split_of_a_whole_answer(guard: PiiGuard) -> None:
    text = "Mail amaka.obi@example.ng or call 0803 123 4567; card 4111 1111 1111 1111. " * 3
    expected = await expected_and_ctx(guard, text)
    for cut in range(len(text) + 1):
        assert await collect(guard.open_stream(make_ctx()), [text[:cut], text[cut:]]) == expected


async def test_hold_back_is_bounded_by_the_window(guard: PiiGuard) -> None:
    words = "the quick brown fox jumps over a lazy dog while we wait for the answer to come "
    f = guard.open_stream(make_ctx())
    out = ""
    for fed, char in enumerate(words * 6, start=1):
        out += await f.feed(char)
        assert fed - len(out) <= WINDOW + STEP + len("answer ")
    assert out + await f.flush() == words * 6


async def test_compact_json_is_not_held_as_one_token(guard: PiiGuard) -> None:
    record = '{"id":"u-1","email":"amaka.obi@example.ng","note":"called_twice_about_the_refund"},'
    text = "[" + record * 12 + "]"
    expected = await expected_and_ctx(guard, text)
    f = guard.open_stream(make_ctx())
    out = ""
    for fed, char in enumerate(text, start=1):
        out += await f.feed(char)
        assert fed - len(out) <= WINDOW + STEP + len(record)
    assert out + await f.flush() == expected


async def test_an_entity_without_end_is_cut_at_the_hold_limit() -> None:
    everything = CustomRecognizer(name="WORDS", pattern=r"[a-z ]{3,}")
    options = PiiOptions(recognizers=(everything,), action="mask", mask_keep=0)
    guard = PiiGuard(shared_engine(), options)  # mask keeps lengths: held = fed - emitted
    f = guard.open_stream(make_ctx())
    out = ""
    text = "lorem ipsum dolor sit amet " * 200
    for fed, char in enumerate(text, start=1):
        out += await f.feed(char)
        assert fed - len(out) <= stream_module.MAX_HOLD + 1
    out += await f.flush()
    assert out == "*" * len(text)


async def test_block_mid_stream_raises_before_the_value_leaks() -> None:
    guard = PiiGuard(shared_engine(), PiiOptions(actions={"CREDIT_CARD": "block"}))
    text = BEFORE + "card 4111 1111 1111 1111" + AFTER
    f = guard.open_stream(make_ctx())
    out = ""
    with pytest.raises(Blocked, match="answer contains CREDIT_CARD"):
        for char in text:
            out += await f.feed(char)
        out += await f.flush()
    assert "4111" not in out


async def test_shadow_stream_passes_text_through_and_reports() -> None:
    guard = PiiGuard(shared_engine(), PiiOptions(action="block"), shadow=True)
    ctx = make_ctx()
    text = BEFORE + "mail amaka.obi@example.ng" + AFTER
    f = guard.open_stream(ctx)
    assert [await f.feed(c) for c in text] == list(text)
    assert await f.flush() == ""
    assert [(x.entity, x.action) for x in ctx.findings] == [("EMAIL_ADDRESS", "reported")]


async def test_an_unterminated_key_block_is_cut_off_at_the_cap(
    guard: PiiGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "PEM_MAX", 400)
    body = "\n".join("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo" + str(i) * 29 for i in range(10))
    text = f"{BEFORE}-----BEGIN EC PRIVATE KEY-----\n{body}\n-----END EC PRIVATE KEY----- done."
    out = await collect(
        guard.open_stream(make_ctx()), [text[i : i + 7] for i in range(0, len(text), 7)]
    )
    assert out.startswith(BEFORE + "<PRIVATE_KEY_") and out.endswith(" done.")
    assert "QUJD" not in out and "BEGIN" not in out


async def test_private_key_is_not_held_when_the_policy_ignores_keys() -> None:
    guard = PiiGuard(shared_engine(), PiiOptions(entities=("EMAIL_ADDRESS",)))
    text = PEM + "\n" + BEFORE * 2
    f = guard.open_stream(make_ctx())
    assert await collect(f, list(text)) == text


VAULT = {
    "<EMAIL_ADDRESS_7f3a9c>": "amaka.obi@example.ng",
    "<PHONE_NUMBER_0a1b2c3d>": "+234 803 123 4567",
}
ANSWERS = [
    "Dear <EMAIL_ADDRESS_7f3a9c>, we will call <PHONE_NUMBER_0a1b2c3d> soon.",
    "<EMAIL_ADDRESS_7f3a9c><PHONE_NUMBER_0a1b2c3d>",
    "Not ours: <EMAIL_ADDRESS_000000>, <PHONE_NUMBER_0a1b2c3d, 2 < 3 and <b>bold</b> <",
    "<<EMAIL_ADDRESS_7f3a9c>> and <EMAIL_ADDRESS_7f3a9",
]


@pytest.mark.parametrize("answer", ANSWERS)
async def test_restore_split_at_every_position(answer: str) -> None:
    from rails.pii.actions import restore

    expected = restore(answer, VAULT)
    for cut in range(len(answer) + 1):
        assert await collect(RestoreFilter(VAULT), [answer[:cut], answer[cut:]]) == expected, cut
    assert await collect(RestoreFilter(VAULT), list(answer)) == expected


async def test_restore_holds_back_only_a_possible_placeholder() -> None:
    f = RestoreFilter(VAULT)
    assert await f.feed("Hello <EMAIL_ADD") == "Hello "
    assert await f.feed("RESS_7f3a9c>!") == "amaka.obi@example.ng!"
    assert await f.feed("a <b") == "a <b"  # cannot become a placeholder of this vault
    assert await f.feed(" <PHONE_NUMBER_0a") == " "
    assert await f.flush() == "<PHONE_NUMBER_0a"


async def test_restore_records_findings_without_values() -> None:
    ctx = make_ctx()
    f = RestoreFilter(VAULT, ctx=ctx)
    await collect(f, list(ANSWERS[0]))
    assert [(x.entity, x.action) for x in ctx.findings] == [
        ("EMAIL_ADDRESS", "restored"),
        ("PHONE_NUMBER", "restored"),
    ]
    assert "amaka" not in repr(ctx.findings)


async def test_restore_with_an_empty_vault_passes_through() -> None:
    f = RestoreFilter({})
    assert await f.feed("<EMAIL_ADDRESS_7f3a9c> <") == "<EMAIL_ADDRESS_7f3a9c> <"
    assert await f.flush() == ""
