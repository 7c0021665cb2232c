"""NG_NIN, NG_BVN and NG_NUBAN: Nigerian identifiers that are just digits.

An 11-digit number is a NIN, a BVN, a phone number or an order id; only the words
around it tell. So these count only with context: the nearest of the NIN words
("NIN", "national identification number", "NIMC" …) or the BVN words ("BVN", "bank
verification number") within a few words decides which one it is, and a bare
11-digit number is neither. A NIN must also pass Presidio's shipped `NgNinRecognizer`
check (Verhoeff); one that fails it scores 0.4, below the default threshold.
A NUBAN (10 digits) counts near "account number", "acct", "NUBAN" or a bank's name,
or right after "account"/"bank" ("my account is …", not "account created at
<timestamp>") or a payment phrase ("transfer to …"); its check digit depends on the bank code, which a text rarely
carries, so it is not checked.
"""

from __future__ import annotations

import re

from presidio_analyzer.predefined_recognizers import NgNinRecognizer

from rails.pii.context import ContextWords
from rails.pii.scan import Candidates
from rails.pii.spans import Span

__all__ = ["NigeriaIdDetector"]

_ELEVEN = re.compile(r"(?<![0-9])[0-9]{11}(?![0-9])")
_TEN = re.compile(r"(?<![0-9])[0-9]{10}(?![0-9])")

_NIN_WORDS = ContextWords(
    [
        *NgNinRecognizer.CONTEXT,
        *("national identification", "national id", "identity number", "nin slip"),
        # weak words: a NIN named only by these still has to pass the checksum
        *("my id", "id number", "id no", "identification number"),
    ]
)
_BVN_WORDS = ContextWords(["bvn", "bank verification number", "bank verification"])
_NUBAN_CLOSE = ContextWords(["account", "bank"], before=12, after=0)
_NUBAN_PAYMENT = ContextWords(
    ["transfer to", "send to", "pay into", "pay to", "paid into", "deposit into", "deposit to"],
    before=16,
    after=0,
)
_NUBAN_WORDS = ContextWords(
    [
        *("account number", "acct", "a/c", "acc no", "nuban", "bank account", "account no"),
        *("access bank", "gtbank", "gtb", "guaranty trust", "zenith", "uba", "first bank"),
        *("fidelity", "union bank", "sterling", "wema", "kuda", "opay", "palmpay"),
        *("moniepoint", "ecobank", "fcmb", "stanbic", "polaris", "keystone", "providus"),
    ]
)
NIN_SCORE = 0.95
NIN_BAD_CHECKSUM_SCORE = 0.4
BVN_SCORE = 0.85
NUBAN_SCORE = 0.8


class NigeriaIdDetector:
    entities = frozenset({"NG_NIN", "NG_BVN", "NG_NUBAN"})

    def __init__(self) -> None:
        self._nin = NgNinRecognizer()

    def detect(
        self, text: str, found: Candidates, wanted: frozenset[str], threshold: float
    ) -> list[Span]:
        spans: list[Span] = []
        ids = "NG_NIN" in wanted or "NG_BVN" in wanted
        for run in found.numbers:
            end = min(len(text), run.end + 1)
            if ids and run.digits >= 11:
                for m in _ELEVEN.finditer(text, run.start, end):
                    span = self._nin_or_bvn(text, m.start(), m.end(), wanted, found.lowered)
                    if span is not None and span.score >= threshold:
                        spans.append(span)
            if "NG_NUBAN" in wanted and run.digits >= 10 and threshold <= NUBAN_SCORE:
                for m in _TEN.finditer(text, run.start, end):
                    start, stop = m.span()
                    if (
                        _NUBAN_WORDS.near(text, start, stop, found.lowered)
                        or _NUBAN_CLOSE.near(text, start, stop, found.lowered)
                        or _NUBAN_PAYMENT.near(text, start, stop, found.lowered)
                    ):
                        spans.append(Span("NG_NUBAN", start, stop, NUBAN_SCORE))
        return spans

    def _nin_or_bvn(
        self,
        text: str,
        start: int,
        end: int,
        wanted: frozenset[str],
        lowered: str | None = None,
    ) -> Span | None:
        nin = _NIN_WORDS.distance(text, start, end, lowered)
        bvn = _BVN_WORDS.distance(text, start, end, lowered)
        if nin is None and bvn is None:
            return None
        checksum = bool(self._nin.validate_result(text[start:end]))
        if bvn is None or (nin is not None and (nin < bvn or (nin == bvn and checksum))):
            if "NG_NIN" not in wanted:
                return None
            return Span("NG_NIN", start, end, NIN_SCORE if checksum else NIN_BAD_CHECKSUM_SCORE)
        return Span("NG_BVN", start, end, BVN_SCORE) if "NG_BVN" in wanted else None
