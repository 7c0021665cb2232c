"""Context words: the evidence that turns a bare number into an identifier.

Presidio boosts scores with context only through a lemmatizer, which needs a spaCy
model; we have none, so context is a plain case-insensitive whole-word search in a
few dozen characters around a match. Used both as a boost (phones, SSNs, IPs) and as
a gate (NIN, BVN, NUBAN and tenant recognizers only count with context).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["CONTEXT_BOOST", "ContextWords", "boosted"]

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

    __slots__ = ("_after", "_before", "_pattern")

    def __init__(self, words: Iterable[str], *, before: int = BEFORE, after: int = AFTER) -> None:
        self._before = before
        self._after = after
        cleaned = sorted({w.strip().lower() for w in words if w.strip()}, key=len, reverse=True)
        self._pattern: re.Pattern[str] | None = None
        if cleaned:
            alternatives = "|".join(re.escape(w) for w in cleaned)
            self._pattern = re.compile(rf"(?<![^\W_])(?:{alternatives})(?![^\W_])", re.IGNORECASE)

    def __bool__(self) -> bool:
        return self._pattern is not None

    def distance(self, text: str, start: int, end: int) -> int | None:
        """Characters between `text[start:end]` and the nearest context word, or None."""
        if self._pattern is None:
            return None
        best: int | None = None
        for m in self._pattern.finditer(text, max(0, start - self._before), start):
            best = start - m.end()
        after = self._pattern.search(text, end, min(len(text), end + self._after))
        if after is not None:
            gap = after.start() - end
            best = gap if best is None else min(best, gap)
        return best

    def near(self, text: str, start: int, end: int) -> bool:
        return self.distance(text, start, end) is not None
