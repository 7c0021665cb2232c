"""PHONE_NUMBER: Nigerian mobiles by pattern, everything else via `phonenumbers`.

Presidio's `PhoneRecognizer` runs `phonenumbers.PhoneNumberMatcher` over the whole
text once per region (8 regions by default): ~1 ms per short window, most of
Presidio's time per KB. We call the same library directly, once per candidate:

- `+…` numbers are parsed without a region and kept when valid (score 0.75);
- Nigerian mobiles (`+234`/`234`/`0` then 70x, 80x, 81x, 90x, 91x and 7 more digits,
  spaces or dashes allowed) match our pattern (0.8 with the country code, 0.6 with a
  leading 0) and need no parsing;
- other national numbers score 0.4, Presidio's phone score, and reach the default
  threshold only with a context word ("phone", "call", …), so they are parsed only
  when they could count; and only in a national shape: `(212) 555-0198` (US),
  a trunk `0` (`020 7946 0958`: GB, NG, DE, FR, IN) or an Indian mobile. Numbers glued
  to an identifier (`ORD-2024…`, `#12345678`) and dates are never phones.
"""

from __future__ import annotations

import re

import phonenumbers

from rails.pii.cache import LruCache
from rails.pii.context import ContextWords, boosted
from rails.pii.scan import Candidates
from rails.pii.spans import Span

__all__ = ["NATIONAL_SHAPES", "PhoneDetector"]

NATIONAL_SHAPES = (
    (re.compile(r"\(?[2-9][0-9]{2}\)?[ .\-]?[2-9][0-9]{2}[ .\-]?[0-9]{4}"), ("US",)),
    (re.compile(r"\(?0[1-9][0-9 ()\-]{6,14}[0-9]"), ("GB", "NG", "DE", "FR", "IN")),
    (re.compile(r"[6-9][0-9]{4}[ \-]?[0-9]{5}"), ("IN",)),
)
"""National number shapes and the regions tried, in order, for each."""

_NG_MOBILE = re.compile(
    r"(?<![0-9+])(?:(?P<cc>(?:\+|00)?234[ \-]?(?:\(0\)[ \-]?)?)|0)"
    r"(?:70|80|81|90|91)[0-9](?:[ \-]?[0-9]){7}(?![0-9])"
)
_SEPARATORS = " \t.-/()"
_GLUED = "#_-/"
# Presidio's list without "number" (order, tracking and account numbers are not phones).
_CONTEXT = ContextWords(
    [
        *("phone", "telephone", "tel", "cell", "cellphone", "mobile", "call", "ring"),
        *("whatsapp", "sms", "text me", "reach me", "contact", "fax", "dial"),
    ]
)
_VALID: LruCache[tuple[str, str | None], bool] = LruCache(4096)
_INTL_SCORE = 0.75
_NATIONAL_SCORE = 0.4


class PhoneDetector:
    entities = frozenset({"PHONE_NUMBER"})

    def detect(
        self, text: str, found: Candidates, wanted: frozenset[str], threshold: float
    ) -> list[Span]:
        if "PHONE_NUMBER" not in wanted:
            return []
        spans: list[Span] = []
        for run in found.numbers:
            if not 7 <= run.digits <= 24:
                continue
            nigerian = self._nigerian(text, run.start, run.end, threshold, found.lowered)
            spans += nigerian
            if text[run.start] == "+":
                if _covers(nigerian, run.start, run.end):
                    # A `+234` mobile spanning the whole run scores at least what
                    # parsing it could give, over the same characters: skip parsing.
                    continue
                spans += self._international(text, run.start, run.end, threshold, found.lowered)
            elif not nigerian:
                spans += self._national(text, run.start, run.end, threshold, found.lowered)
        return spans

    def _nigerian(
        self, text: str, start: int, end: int, threshold: float, lowered: str | None = None
    ) -> list[Span]:
        spans = []
        for m in _NG_MOBILE.finditer(text, start, min(len(text), end + 1)):
            score = 0.8 if m.group("cc") else 0.6
            if _CONTEXT.near(text, m.start(), m.end(), lowered):
                score = boosted(score)
            if score >= threshold:
                spans.append(Span("PHONE_NUMBER", m.start(), m.end(), score))
        return spans

    def _international(
        self, text: str, start: int, end: int, threshold: float, lowered: str | None = None
    ) -> list[Span]:
        score = _INTL_SCORE
        if _CONTEXT.near(text, start, end, lowered):
            score = boosted(score)
        if score < threshold:
            return []
        # A run may carry trailing digits that are not part of the number: drop
        # trailing groups until the rest parses (at most three tries).
        stop = end
        for _ in range(3):
            candidate = text[start:stop].rstrip(_SEPARATORS)
            if _valid(candidate, None):
                return [Span("PHONE_NUMBER", start, start + len(candidate), score)]
            cut = max(candidate.rfind(c) for c in _SEPARATORS)
            if cut <= 4:
                break
            stop = start + cut
        return []

    def _national(
        self, text: str, start: int, end: int, threshold: float, lowered: str | None = None
    ) -> list[Span]:
        if boosted(_NATIONAL_SCORE) < threshold or _glued(text, start, end):
            return []
        candidate = text[start:end].rstrip(_SEPARATORS)
        shapes = [regions for shape, regions in NATIONAL_SHAPES if shape.fullmatch(candidate)]
        if not shapes:
            return []  # checked before the (slower) context search
        context = _CONTEXT.near(text, start, end, lowered)
        score = boosted(_NATIONAL_SCORE) if context else _NATIONAL_SCORE
        if score < threshold:
            return []
        for regions in shapes:
            if any(_valid(candidate, r) for r in regions):
                return [Span("PHONE_NUMBER", start, start + len(candidate), score)]
        return []


def _glued(text: str, start: int, end: int) -> bool:
    """Part of an identifier such as `ORD-20240115-8842` or `#12345678`."""
    before = text[start - 1] if start else " "
    after = text[end] if end < len(text) else " "
    return before.isalnum() or before in _GLUED or after.isalnum() or after == "_"


def _covers(spans: list[Span], start: int, end: int) -> bool:
    return any(s.start == start and s.end == end for s in spans)


def _valid(candidate: str, region: str | None) -> bool:
    """`phonenumbers` says `candidate` is a valid number (cached: parsing costs ~50 µs)."""
    key = (candidate, region)
    valid = _VALID.get(key)
    if valid is None:
        try:
            valid = phonenumbers.is_valid_number(phonenumbers.parse(candidate, region))
        except phonenumbers.NumberParseException:
            valid = False
        _VALID.put(key, bool(valid))
    return bool(valid)
