"""Digit-only Nigerian identifiers named by everyday phrases (payments, "my id is")."""

from __future__ import annotations

import pytest

from rails.pii.corpus import verhoeff_complete
from rails.pii.options import PiiOptions
from rails.pii.testing import shared_engine

NIN = verhoeff_complete("6644849620")
BAD_NIN = NIN[:-1] + str((int(NIN[-1]) + 1) % 10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("please transfer to 2622177879 now", "NG_NUBAN"),
        ("send to 0334760573 by noon", "NG_NUBAN"),
        ("pay into 7897420146 (GTBank)", "NG_NUBAN"),
        (f"my id is {NIN}", "NG_NIN"),
        (f"id number: {NIN}", "NG_NIN"),
        (f"my id is {BAD_NIN}", None),  # weak words need the checksum
        ("order 2622177879 shipped", None),
        ("transfer took 2622177879 ms", None),
        (f"ticket {NIN} closed", None),
    ],
)
def test_phrases(text: str, expected: str | None) -> None:
    spans = shared_engine().analyze(text, PiiOptions(entities=("NG_NIN", "NG_BVN", "NG_NUBAN")))
    assert [s.entity for s in spans] == ([expected] if expected else [])
