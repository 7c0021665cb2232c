"""Tenant recognizers and allow-lists: validated at load, time-limited at run."""

from __future__ import annotations

import logging
import time

import pytest

from rails.pii.custom import MAX_PATTERN_LENGTH, compile_custom, compile_pattern
from rails.pii.guard import PiiGuard
from rails.pii.options import CustomRecognizer, PiiOptions
from rails.pii.testing import make_ctx, shared_engine

ORDER = CustomRecognizer(name="ORDER_ID", pattern=r"ORD-\d{8}-\d{4}", context=("order",))


@pytest.mark.parametrize(
    ("recognizer", "reason"),
    [
        (CustomRecognizer(name="order id", pattern="x"), "upper-case letters"),
        (CustomRecognizer(name="_X", pattern="x"), "upper-case letters"),
        (CustomRecognizer(name="X", pattern=""), "empty pattern"),
        (CustomRecognizer(name="X", pattern="a" * (MAX_PATTERN_LENGTH + 1)), "the limit is 512"),
        (CustomRecognizer(name="X", pattern="([a-z]"), "invalid regular expression"),
        (CustomRecognizer(name="X", pattern=r"\d*"), "matches the empty string"),
        (CustomRecognizer(name="X", pattern=r"(a|aa)+$"), "backtracks catastrophically"),
        (CustomRecognizer(name="X", pattern=r"(\d|\d\d)+$"), "backtracks catastrophically"),
        (CustomRecognizer(name="X", pattern="x", score=1.5), "score must be between 0 and 1"),
        (CustomRecognizer(name="X", pattern="x", context=("w",) * 33), "at most 32 context words"),
    ],
)
def test_bad_recognizers_are_refused_at_load(recognizer: CustomRecognizer, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        compile_custom(recognizer)


def test_bad_allow_pattern_is_refused_by_the_engine() -> None:
    with pytest.raises(ValueError, match=r"allow_patterns\[1\]: .*catastrophically"):
        shared_engine().prepare(PiiOptions(allow_patterns=("ok", "(a|aa)+$")))


def test_duplicate_recognizer_names_are_refused() -> None:
    with pytest.raises(ValueError, match="same name"):
        shared_engine().prepare(PiiOptions(recognizers=(ORDER, ORDER)))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("order ORD-20240115-8842 shipped", "order <ORDER_ID> shipped"),
        ("ref ORD-20240115-8842 shipped", "ref ORD-20240115-8842 shipped"),  # no context word
        ("Your order: ORD-20240115-8842, mail a@example.com", "Your order: <ORDER_ID>, mail <EMAIL_ADDRESS>"),
    ],
)  # fmt: skip
async def test_custom_recognizer_with_context(text: str, expected: str) -> None:
    guard = PiiGuard(shared_engine(), PiiOptions(recognizers=(ORDER,)))
    assert await guard.check(text, "input", make_ctx()) == expected


async def test_nested_quantifier_finishes_fast() -> None:
    # `(a+)+$` is the textbook catastrophic pattern; the `regex` module handles it, and
    # every match runs with a timeout anyway.
    recognizer = CustomRecognizer(name="AS", pattern=r"(a+)+$")
    compile_custom(recognizer)
    guard = PiiGuard(shared_engine(), PiiOptions(recognizers=(recognizer,)))
    started = time.perf_counter()
    out = await guard.check("a" * 50 + "b", "input", make_ctx())
    assert out == "a" * 50 + "b"
    assert time.perf_counter() - started < 2.0


async def test_a_pattern_that_times_out_is_skipped_for_that_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Passes the load-time probes (no `q` in them) but explodes on runs of `q`.
    slow = CustomRecognizer(name="SLOW_Q", pattern=r"(q|qq)+$")
    guard = PiiGuard(shared_engine(), PiiOptions(recognizers=(slow,)))
    text = "q" * 48 + "! and a@example.com"
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="rails.pii.custom"):
        out = await guard.check(text, "input", make_ctx())
    assert time.perf_counter() - started < 2.0
    assert out == "q" * 48 + "! and <EMAIL_ADDRESS>"
    assert "SLOW_Q timed out" in caplog.text and "qqqq" not in caplog.text
    assert await guard.check("q" * 3, "input", make_ctx()) == "<SLOW_Q>"


@pytest.mark.parametrize(
    ("options", "kept"),
    [
        (PiiOptions(allow=("support@acme.com",)), ["support@acme.com"]),
        (PiiOptions(allow=(" SUPPORT@ACME.COM ",)), ["support@acme.com"]),
        (PiiOptions(allow_patterns=(r"[a-z]+@acme\.com",)), ["support@acme.com", "ann@acme.com"]),
        (PiiOptions(allow_patterns=(r"(?i)\+234.*",)), ["+234 803 123 4567"]),
    ],
)
async def test_allow_lists(options: PiiOptions, kept: list[str]) -> None:
    values = ["support@acme.com", "ann@acme.com", "+234 803 123 4567"]
    out = await PiiGuard(shared_engine(), options).check(" ".join(values), "input", make_ctx())
    assert [v for v in values if v in out] == kept


async def test_tenant_policies_differ() -> None:
    """Tenant A redacts emails, tenant B allows them."""
    a = PiiGuard(shared_engine(), PiiOptions(entities=("EMAIL_ADDRESS",)))
    b = PiiGuard(shared_engine(), PiiOptions(entities=("EMAIL_ADDRESS",), allow_patterns=(".*",)))
    text = "write to ann@example.com"
    assert await a.check(text, "input", make_ctx("a")) == "write to <EMAIL_ADDRESS>"
    assert await b.check(text, "input", make_ctx("b")) == text


def test_allow_patterns_may_match_empty() -> None:
    compile_pattern(".*", "allow_patterns[0]", allow_empty=True)
    with pytest.raises(ValueError, match="empty string"):
        compile_pattern(".*", "pattern")
