"""IBAN_CODE: Presidio's `IbanRecognizer` logic without its per-call overhead.

`IbanRecognizer.analyze` recompiles its pattern, builds an explanation and a result
object for every candidate and validates every group fallback (~80 µs per IBAN).
`IbanFinder.find` runs the same pattern, the same fallback order (the longest match
first, then without the trailing 1-3 and 4-character groups) and the same
validation (`validate_result`: mod-97, then Presidio's per-country layout table), but
compiles everything once and remembers the verdict per value (IBANs repeat in a
conversation). Tests compare both with Presidio's on generated IBANs.
"""

from __future__ import annotations

import regex
from presidio_analyzer import EntityRecognizer
from presidio_analyzer.predefined_recognizers import IbanRecognizer
from presidio_analyzer.predefined_recognizers.generic.iban_patterns import regex_per_country

from rails.pii.cache import LruCache
from rails.pii.checksums import mod97_ok
from rails.pii.spans import Span

__all__ = ["IbanFinder"]


class IbanFinder:
    """IBANs as `IbanRecognizer.analyze` finds them, on a window of a text."""

    def __init__(self, recognizer: IbanRecognizer | None = None) -> None:
        self.recognizer = recognizer or IbanRecognizer()
        flags = self.recognizer.global_regex_flags or 0
        pattern = self.recognizer.patterns[0]  # type: ignore[has-type]  # untyped in presidio
        self._pattern = regex.compile(pattern.regex, flags)
        self._base = float(pattern.score)
        self._verdicts: LruCache[str, tuple[bool | None]] = LruCache(1024)

    def find(self, window: str) -> list[Span]:
        """Spans in `window` with the score Presidio would give (above 0 only)."""
        spans: list[Span] = []
        for m in self._pattern.finditer(window):
            start = m.start()
            for group in range(len(m.groups()), 0, -1):
                end = m.end(group) if m.end(group) > 0 else m.end()
                if end <= start:
                    continue
                score = self._base
                valid = self._validate(window[start:end])
                if valid is not None:
                    score = EntityRecognizer.MAX_SCORE if valid else EntityRecognizer.MIN_SCORE
                if score > EntityRecognizer.MIN_SCORE:
                    spans.append(Span("IBAN_CODE", start, end, score))
                    break
        return spans

    def _validate(self, value: str) -> bool | None:
        """`IbanRecognizer.validate_result(value)`, remembered per value."""
        verdict = self._verdicts.get(value)
        if verdict is None:
            verdict = (_validate(value),)
            self._verdicts.put(value, verdict)
        return verdict[0]


_FORMATS = {
    country: regex.compile(pattern, regex.DOTALL | regex.MULTILINE)
    for country, pattern in regex_per_country.items()
    if pattern
}
"""Presidio's per-country IBAN layouts, compiled once (it looks each up per call)."""


def _validate(value: str) -> bool | None:
    """What `IbanRecognizer().validate_result(value)` returns: False unless the check
    digits are right; then True if the country's layout matches, None if it matches
    only in upper case, else False."""
    if not mod97_ok(value):
        return False
    iban = value.replace("-", "").replace(" ", "")
    if _layout_ok(iban):
        return True
    return None if _layout_ok(iban.upper()) else False


def _layout_ok(iban: str) -> bool:
    pattern = _FORMATS.get(iban[:2])
    return pattern is not None and pattern.match(iban) is not None
