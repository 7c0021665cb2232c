"""Context words: the evidence that turns a bare number into an identifier.

Presidio boosts scores with context only through a lemmatizer, which needs a spaCy
model; we have none, so context is a plain case-insensitive whole-word search in a
few dozen characters around a match. Used both as a boost (phones, SSNs, IPs) and as
a gate (NIN, BVN, NUBAN and tenant recognizers only count with context).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["CONTEXT_BOOST", "ContextWords", "boosted", "lowered_ascii"]

BEFORE = 48
"""Characters searched before a match (about seven words)."""
AFTER = 24
"""Characters searched after a match (`12345678901 (NIN)`)."""
CONTEXT_BOOST = 0.35
"""Presidio's default boost for a context hit."""
_MIN_WITH_CONTEXT = 0.4


def boosted(score: float) -> float:
    """A score raised by one context hit, as Presidio's context enhancer does."""
    return min(1.0, max(score + CONTEXT_BOOST, _MIN_WITH_CONTEXT))


class ContextWords:
    """A compiled set of context words or phrases."""

    __slots__ = ("_after", "_before", "_lowered", "_pattern")

    def __init__(self, words: Iterable[str], *, before: int = BEFORE, after: int = AFTER) -> None:
        self._before = before
        self._after = after
        cleaned = sorted({w.strip().lower() for w in words if w.strip()}, key=len, reverse=True)
        self._pattern: re.Pattern[str] | None = None
        self._lowered: re.Pattern[str] | None = None
        if cleaned:
            alternatives = "|".join(re.escape(w) for w in cleaned)
            self._pattern = re.compile(rf"(?<![^\W_])(?:{alternatives})(?![^\W_])", re.IGNORECASE)
            if all(w.isascii() for w in cleaned):
                # The same search for ASCII text already lower-cased: case-sensitive
                # and ASCII-only classes, about twice as fast (same matches there).
                self._lowered = re.compile(
                    rf"(?<![a-z0-9])(?:{alternatives})(?![a-z0-9])", re.ASCII
                )

    def __bool__(self) -> bool:
        return self._pattern is not None

    def distance(self, text: str, start: int, end: int, lowered: str | None = None) -> int | None:
        """Characters between `text[start:end]` and the nearest context word, or None.
        `lowered`, if given, must be `text.lower()` of an ASCII `text` (see
        `lowered_ascii`): it lets the search skip case folding."""
        pattern = self._pattern
        if pattern is None:
            return None
        if lowered is not None and self._lowered is not None:
            pattern = self._lowered
            text = lowered
        best: int | None = None
        for m in pattern.finditer(text, max(0, start - self._before), start):
            best = start - m.end()
        after = pattern.search(text, end, min(len(text), end + self._after))
        if after is not None:
            gap = after.start() - end
            best = gap if best is None else min(best, gap)
        return best

    def near(self, text: str, start: int, end: int, lowered: str | None = None) -> bool:
        return self.distance(text, start, end, lowered) is not None


def lowered_ascii(text: str) -> str | None:
    """`text.lower()` if `text` is ASCII (then offsets and word boundaries are kept),
    else None; pass it to `ContextWords.distance` to search a text many times."""
    return text.lower() if text.isascii() else None
