"""Presidio's predefined recognizers, run on candidate windows instead of whole texts.

Presidio stays the source of truth for what an email, a card, an IBAN, an IP, a URL
or an SSN looks like and how it is validated (Luhn, IBAN mod-97, `ipaddress`, the
public-suffix list): we use its recognizer objects, their patterns, scores and
`validate_result` / `invalidate_result`. What we skip is `AnalyzerEngine.analyze`
over the whole text (6-11 ms per KB here): each pattern is searched only inside the
windows `scan()` found, with the full text as context so `\\b` and look-behinds see
the characters around a window exactly as they would in a whole-text run.

The `AnalyzerEngine` itself is still built (`build_analyzer`) with a no-op NLP
engine: it runs the optional spaCy NER and serves as the slow reference in
`rails.pii.evaluate`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

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

from rails.pii.context import ContextWords, boosted
from rails.pii.scan import Candidates
from rails.pii.spans import Span

__all__ = ["OfflineEmailRecognizer", "PresidioDetector", "build_analyzer", "quiet_presidio_logs"]


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's email recognizer whose domain check never touches the network.

    The stock one calls `tldextract.extract`, which fetches the public-suffix list on
    first use; ours reads the snapshot bundled with tldextract and caches nothing on disk.
    """

    def __init__(self) -> None:
        super().__init__()
        self._tld = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    def validate_result(self, pattern_text: str) -> bool:
        return self._tld(pattern_text).fqdn != ""


class _Windowed:
    """One Presidio `PatternRecognizer`, searched inside windows of a larger text."""

    def __init__(self, recognizer: PatternRecognizer, extra_context: Iterable[str] = ()) -> None:
        self.recognizer = recognizer
        self.entity: str = recognizer.supported_entities[0]
        flags = recognizer.global_regex_flags or 0
        patterns: list[Pattern] = recognizer.patterns  # type: ignore[has-type]  # untyped in presidio
        self._patterns = [(regex.compile(p.regex, flags), float(p.score)) for p in patterns]
        self._context = ContextWords([*(recognizer.context or ()), *extra_context])

    def find(self, text: str, start: int, end: int, threshold: float) -> list[Span]:
        found: list[Span] = []
        for pattern, base in self._patterns:
            for m in pattern.finditer(text, start, min(len(text), end + 1)):
                value = m.group()
                if not value:
                    continue
                score = base
                valid = self.recognizer.validate_result(value)
                if valid is not None:
                    score = EntityRecognizer.MAX_SCORE if valid else EntityRecognizer.MIN_SCORE
                if self.recognizer.invalidate_result(value):
                    score = EntityRecognizer.MIN_SCORE
                if 0 < score < 1 and self._context.near(text, m.start(), m.end()):
                    score = boosted(score)
                if score > 0 and score >= threshold:
                    found.append(Span(self.entity, m.start(), m.end(), score))
        return found


class PresidioDetector:
    """EMAIL_ADDRESS, CREDIT_CARD, IBAN_CODE, IP_ADDRESS, URL and US_SSN via Presidio."""

    entities = frozenset(
        {"EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "URL", "US_SSN"}
    )

    def __init__(self) -> None:
        self.email = _Windowed(OfflineEmailRecognizer())
        self.card = _Windowed(CreditCardRecognizer())
        self.ip = _Windowed(IpRecognizer(), ["address", "server", "host"])
        self.url = _Windowed(UrlRecognizer())
        self.ssn = _Windowed(UsSsnRecognizer(), ["social security"])
        self.iban = IbanRecognizer()

    def recognizers(self) -> list[EntityRecognizer]:
        """The Presidio objects in use (for the reference `AnalyzerEngine`)."""
        windowed = [self.email, self.card, self.ip, self.url, self.ssn]
        return [*(w.recognizer for w in windowed), self.iban]

    def detect(
        self, text: str, found: Candidates, wanted: frozenset[str], threshold: float
    ) -> list[Span]:
        spans: list[Span] = []
        if "EMAIL_ADDRESS" in wanted:
            for start, end in found.emails:
                spans += self.email.find(text, start, end, threshold)
        if "URL" in wanted:
            for start, end in found.urls:
                spans += self.url.find(text, start, end, threshold)
        if "IP_ADDRESS" in wanted:
            for start, end in found.ipv6:
                spans += self.ip.find(text, start, end, threshold)
        if "IBAN_CODE" in wanted:
            for start in found.ibans:
                spans += self._iban(text, start, threshold)
        for run in found.numbers:
            if "CREDIT_CARD" in wanted and run.digits >= 13:
                spans += self.card.find(text, run.start, run.end, threshold)
            if "US_SSN" in wanted and run.digits >= 9:
                spans += self.ssn.find(text, run.start, run.end, threshold)
            if "IP_ADDRESS" in wanted and text.count(".", run.start, run.end) >= 3:
                spans += self.ip.find(text, run.start, run.end, threshold)
        return spans

    def _iban(self, text: str, start: int, threshold: float) -> list[Span]:
        # IbanRecognizer.analyze has its own group-fallback logic; IBANs are <= 42 chars.
        lo = max(0, start - 1)
        window = text[lo : start + 48]
        return [
            Span("IBAN_CODE", lo + r.start, lo + r.end, float(r.score))
            for r in self.iban.analyze(window, ["IBAN_CODE"])
            if r.start >= start - lo and r.score >= threshold
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
