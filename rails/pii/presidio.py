"""Presidio's predefined recognizers, run on candidate windows instead of whole texts.

Presidio stays the source of truth for what an email, a card, an IBAN, an IP, a URL
or an SSN looks like and how it is validated (Luhn, IBAN mod-97, `ipaddress`, the
public-suffix list): we use its recognizer objects, their patterns, scores and
`validate_result` / `invalidate_result` (for cards a faster Luhn with the same
answers, `rails.pii.checksums`; for IBANs `rails.pii.iban`, the same logic compiled
once). What we skip is `AnalyzerEngine.analyze` over the whole text (6-11 ms per KB
here): each pattern is searched only inside the windows `scan()` found, with the full
text as context so `\\b` and look-behinds see the characters around a window exactly
as they would in a whole-text run.

The `AnalyzerEngine` itself is still built (`build_analyzer`) with a no-op NLP
engine: it runs the optional spaCy NER and serves as the slow reference in
`rails.pii.evaluate`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import regex
import tldextract
from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
)
from presidio_analyzer.nlp_engine import NlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    NgNinRecognizer,
    UrlRecognizer,
    UsSsnRecognizer,
)

from rails.pii.cache import LruCache
from rails.pii.checksums import luhn_ok
from rails.pii.context import ContextWords, boosted
from rails.pii.iban import IbanFinder
from rails.pii.scan import Candidates
from rails.pii.spans import Span

__all__ = ["OfflineEmailRecognizer", "PresidioDetector", "build_analyzer", "quiet_presidio_logs"]


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's email recognizer whose domain check never touches the network.

    The stock one calls `tldextract.extract`, which fetches the public-suffix list on
    first use; ours reads the snapshot bundled with tldextract, caches nothing on disk
    and remembers its verdict per domain in memory.
    """

    def __init__(self) -> None:
        super().__init__()
        self._tld = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
        self._domains: LruCache[str, bool] = LruCache(1024)

    def validate_result(self, pattern_text: str) -> bool:
        if any(c in pattern_text for c in "/?#"):
            return self._tld(pattern_text).fqdn != ""
        # Without those, tldextract reads the host as everything after the last "@":
        # the verdict depends on the domain alone, and domains repeat.
        domain = pattern_text.rpartition("@")[2]
        valid = self._domains.get(domain)
        if valid is None:
            valid = self._tld(domain).fqdn != ""
            self._domains.put(domain, valid)
        return valid


class _Windowed:
    """One Presidio `PatternRecognizer`, searched inside windows of a larger text."""

    def __init__(
        self,
        recognizer: PatternRecognizer,
        extra_context: Iterable[str] = (),
        validate: Callable[[str], bool | None] | None = None,
    ) -> None:
        self.recognizer = recognizer
        self._validate = validate or recognizer.validate_result
        self.entity: str = recognizer.supported_entities[0]
        flags = recognizer.global_regex_flags or 0
        patterns: list[Pattern] = recognizer.patterns  # type: ignore[has-type]  # untyped in presidio
        self._patterns = [(regex.compile(p.regex, flags), float(p.score)) for p in patterns]
        self._any = _any_of([p.regex for p in patterns], flags) if len(patterns) > 1 else None
        self._context = ContextWords([*(recognizer.context or ()), *extra_context])

    def find(
        self, text: str, start: int, end: int, threshold: float, lowered: str | None = None
    ) -> list[Span]:
        found: list[Span] = []
        stop = min(len(text), end + 1)
        if self._any is not None and self._any.search(text, start, stop) is None:
            return found
        for pattern, base in self._patterns:
            for m in pattern.finditer(text, start, stop):
                value = m.group()
                if not value:
                    continue
                score = base
                valid = self._validate(value)
                if valid is not None:
                    score = EntityRecognizer.MAX_SCORE if valid else EntityRecognizer.MIN_SCORE
                if self.recognizer.invalidate_result(value):
                    score = EntityRecognizer.MIN_SCORE
                if 0 < score < 1 and self._context.near(text, m.start(), m.end(), lowered):
                    score = boosted(score)
                if score > 0 and score >= threshold:
                    found.append(Span(self.entity, m.start(), m.end(), score))
        return found


_INLINE_FLAGS = regex.compile(r"\(\?[a-zA-Z]+\)")
_BACKREF = regex.compile(r"\\[1-9]|\(\?P=|\\g<")


def _any_of(patterns: list[str], flags: int) -> regex.Pattern[str] | None:
    """One regex that matches wherever one of `patterns` does, so that a window it
    misses needs no per-pattern search; None if they cannot be joined safely (different
    inline flags, back-references)."""
    heads = {_INLINE_FLAGS.match(p) for p in patterns}
    prefixes = {h.group() if h else "" for h in heads}
    if len(prefixes) != 1 or any(_BACKREF.search(p) for p in patterns):
        return None
    (prefix,) = prefixes
    body = "|".join(f"(?:{p[len(prefix) :]})" for p in patterns)
    return regex.compile(prefix + body, flags)


class PresidioDetector:
    """EMAIL_ADDRESS, CREDIT_CARD, IBAN_CODE, IP_ADDRESS, URL and US_SSN via Presidio."""

    entities = frozenset(
        {"EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "URL", "US_SSN"}
    )

    def __init__(self) -> None:
        self.email = _Windowed(OfflineEmailRecognizer())
        self.card = _Windowed(CreditCardRecognizer(), validate=luhn_ok)
        self.ip = _Windowed(IpRecognizer(), ["address", "server", "host"])
        self.url = _Windowed(UrlRecognizer())
        self.ssn = _Windowed(UsSsnRecognizer(), ["social security"])
        self.iban = IbanFinder(IbanRecognizer())

    def recognizers(self) -> list[EntityRecognizer]:
        """The Presidio objects in use (for the reference `AnalyzerEngine`)."""
        windowed = [self.email, self.card, self.ip, self.url, self.ssn]
        return [*(w.recognizer for w in windowed), self.iban.recognizer]

    def detect(
        self, text: str, found: Candidates, wanted: frozenset[str], threshold: float
    ) -> list[Span]:
        spans: list[Span] = []
        if "EMAIL_ADDRESS" in wanted:
            for start, end in found.emails:
                spans += self.email.find(text, start, end, threshold, found.lowered)
        if "URL" in wanted:
            for start, end in found.urls:
                spans += self.url.find(text, start, end, threshold, found.lowered)
        if "IP_ADDRESS" in wanted:
            for start, end in found.ipv6:
                spans += self.ip.find(text, start, end, threshold, found.lowered)
        if "IBAN_CODE" in wanted:
            for start in found.ibans:
                spans += self._iban(text, start, threshold)
        for run in found.numbers:
            if "CREDIT_CARD" in wanted and run.digits >= 13:
                spans += self.card.find(text, run.start, run.end, threshold, found.lowered)
            if "US_SSN" in wanted and run.digits >= 9:
                spans += self.ssn.find(text, run.start, run.end, threshold, found.lowered)
            if "IP_ADDRESS" in wanted and text.count(".", run.start, run.end) >= 3:
                spans += self.ip.find(text, run.start, run.end, threshold, found.lowered)
        return spans

    def _iban(self, text: str, start: int, threshold: float) -> list[Span]:
        # IbanRecognizer.analyze has its own group-fallback logic; IBANs are <= 42 chars.
        lo = max(0, start - 1)
        return [
            s.shifted(lo)
            for s in self.iban.find(text[lo : start + 48])
            if s.start >= start - lo and s.score >= threshold
        ]


def nin_validator() -> NgNinRecognizer:
    """Presidio's NIN recognizer; we use its Verhoeff check, not its bare-number pattern."""
    return NgNinRecognizer()


def build_analyzer(
    nlp_engine: NlpEngine, recognizers: Iterable[EntityRecognizer]
) -> AnalyzerEngine:
    """A Presidio `AnalyzerEngine` over exactly `recognizers` (nothing loaded from disk
    or network)."""
    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in recognizers:
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(nlp_engine=nlp_engine, registry=registry, supported_languages=["en"])


class _NoArgs(logging.Filter):
    """Drops the arguments of Presidio's log records: some of them carry matched text."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        return True


def quiet_presidio_logs() -> None:
    """Presidio logs at INFO while loading and, on some validation errors, logs the
    value; keep its logger at WARNING and strip record arguments. Idempotent."""
    logger = logging.getLogger("presidio-analyzer")
    if logger.level == logging.NOTSET or logger.level < logging.WARNING:
        logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _NoArgs) for f in logger.filters):
        logger.addFilter(_NoArgs())
