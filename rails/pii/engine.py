"""The PII engine: one per process, shared by every tenant's PII guards.

`PiiEngine.build()` loads Presidio's recognizers, our own (Nigerian identifiers and
phones, credentials) and, if asked, a spaCy NER model; that takes a second or two,
so the gateway builds it once at start. Per call the work is:

    scan(text)              candidate windows (a few substring/regex searches)
    detectors               Presidio patterns + validators, phonenumbers, checksums,
                            only on those windows; skipped when they cannot reach
                            the threshold
    tenant recognizers      the policy's own regexes, time-limited
    allow-lists, threshold  then overlaps resolved (highest score, then longest)

Results are cached per (options, text) in a bounded LRU keyed by a BLAKE2 digest of
the text, never the text itself: chat clients resend the whole conversation every
turn, so most messages have been analysed before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

import msgspec
import regex
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import NoOpNlpEngine
from presidio_analyzer.predefined_recognizers import NgNinRecognizer, PhoneRecognizer

from rails.pii.cache import LruCache
from rails.pii.credentials import CredentialDetector
from rails.pii.custom import MATCH_TIMEOUT, CompiledRecognizer, compile_custom, compile_pattern
from rails.pii.ner import NER_ENTITIES, NerDetector
from rails.pii.nigeria import NigeriaIdDetector
from rails.pii.options import PiiOptions
from rails.pii.phone import PhoneDetector
from rails.pii.presidio import PresidioDetector, build_analyzer, quiet_presidio_logs
from rails.pii.scan import Detector, scan
from rails.pii.spans import Span, resolve_overlaps

__all__ = ["PiiEngine", "Plan"]

_WARM_UP: Final = (
    "mail a.b@example.com, call +44 20 7946 0958 or 0803 123 4567, phone (212) 555-0198, "
    "card 4111 1111 1111 1111, IBAN GB82 WEST 1234 5698 7654 32, ip 10.0.0.1 fe80::1, "
    "NIN 12345678901, BVN 22212345678, account 0123456789, https://example.com, "
    "key sk-abcdefghijklmnopqrstu1234 AKIAIOSFODNN7EXAMPLE ssn 536-22-8745"
)


@dataclass(frozen=True, slots=True)
class Plan:
    """`PiiOptions` compiled for analysis; build with `PiiEngine.prepare`."""

    key: bytes
    """Digest of everything that affects analysis (part of the result-cache key)."""
    wanted: frozenset[str]
    """Built-in (and NER) entity types to look for; tenant recognizers always run."""
    threshold: float
    allow: frozenset[str]
    allow_patterns: tuple[regex.Pattern[str], ...]
    custom: tuple[CompiledRecognizer, ...]

    def allowed(self, value: str) -> bool:
        if value.strip().casefold() in self.allow:
            return True
        for pattern in self.allow_patterns:
            try:
                if pattern.fullmatch(value, timeout=MATCH_TIMEOUT) is not None:
                    return True
            except TimeoutError:
                continue  # fail closed: the value stays PII
        return False


class PiiEngine:
    """Finds PII spans in text. Thread-safe; build once with `PiiEngine.build()`."""

    def __init__(
        self,
        detectors: tuple[Detector, ...],
        presidio: AnalyzerEngine,
        ner: NerDetector | None = None,
        *,
        cache_size: int = 4096,
    ) -> None:
        self._detectors = detectors
        self._ner = ner
        self.presidio = presidio
        """Presidio's own `AnalyzerEngine` over the same recognizers, analysing whole
        texts: the slow reference path (`rails.pii.evaluate` compares against it)."""
        self._builtin = frozenset().union(*(d.entities for d in detectors))
        self.supported_entities: frozenset[str] = self._builtin | (
            NER_ENTITIES if ner else frozenset()
        )
        """Every entity type this engine can find (tenant recognizers add their own)."""
        self._plans: LruCache[bytes, Plan] = LruCache(256)
        self._results: LruCache[tuple[bytes, bytes], tuple[Span, ...]] = LruCache(cache_size)

    @classmethod
    def build(cls, nlp_model: str | None = None, *, cache_size: int = 4096) -> PiiEngine:
        """Build the engine offline. `nlp_model` names an installed spaCy model (or a
        path to one) for PERSON/LOCATION/ORGANIZATION/NRP; `ValueError` if absent."""
        quiet_presidio_logs()
        presidio_detector = PresidioDetector()
        detectors: tuple[Detector, ...] = (
            presidio_detector,
            PhoneDetector(),
            NigeriaIdDetector(),
            CredentialDetector(),
        )
        no_op = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "no_op"}])
        no_op.load()
        reference = build_analyzer(
            no_op, [*presidio_detector.recognizers(), PhoneRecognizer(), NgNinRecognizer()]
        )
        ner = NerDetector.load(nlp_model) if nlp_model else None
        engine = cls(detectors, reference, ner, cache_size=cache_size)
        engine.analyze_plan(_WARM_UP, engine.prepare(PiiOptions()), cache=False)
        return engine

    def prepare(self, options: PiiOptions) -> Plan:
        """Validate and compile `options`; `ValueError` says what is wrong. Cached, so
        calling it per request is cheap; guards call it once when built."""
        encoded = msgspec.json.encode(options)
        plan = self._plans.get(encoded)
        if plan is None:
            plan = self._compile(options)
            self._plans.put(encoded, plan)
        return plan

    def analyze(self, text: str, options: PiiOptions) -> list[Span]:
        """PII spans in `text` under `options`, sorted, non-overlapping. CPU-bound."""
        return list(self.analyze_plan(text, self.prepare(options)))

    def analyze_plan(
        self, text: str, plan: Plan, *, cache: bool = True, since: int = 0
    ) -> tuple[Span, ...]:
        """`analyze` with a prepared plan. `cache=False` for one-off texts; `since`
        skips entities that end before it (stream windows: text before `since` is
        only context)."""
        if not text:
            return ()
        if since:
            return self._run(text, plan, since)
        key = b""
        if cache:
            data = text.encode("utf-8", "surrogatepass")
            key = hashlib.blake2b(data, digest_size=16).digest()
            hit = self._results.get((plan.key, key))
            if hit is not None:
                return hit
        spans = self._run(text, plan)
        if cache:
            self._results.put((plan.key, key), spans)
        return spans

    def _run(self, text: str, plan: Plan, since: int = 0) -> tuple[Span, ...]:
        raw: list[Span] = []
        found = scan(text)
        if since:
            found.drop_before(since)
        if found:
            for detector in self._detectors:
                if detector.entities & plan.wanted:
                    raw += detector.detect(text, found, plan.wanted, plan.threshold)
        for recognizer in plan.custom:
            raw += recognizer.find(text)
        if self._ner is not None:
            raw += self._ner.find(text, plan.wanted, plan.threshold)
        if not plan.allow and not plan.allow_patterns:  # the usual case: nothing to check
            return resolve_overlaps(s for s in raw if s.score >= plan.threshold)
        return resolve_overlaps(
            s for s in raw if s.score >= plan.threshold and not plan.allowed(text[s.start : s.end])
        )

    def _compile(self, options: PiiOptions) -> Plan:
        custom = tuple(compile_custom(r) for r in options.recognizers)
        names = {r.name for r in custom}
        if len(names) != len(custom):
            raise ValueError("recognizers: two recognizers have the same name")
        known = self.supported_entities | names
        wanted = (
            self.supported_entities if options.entities is None else frozenset(options.entities)
        )
        for entity in sorted((wanted | options.actions.keys()) - known):
            if entity in NER_ENTITIES:
                raise ValueError(f"{entity} needs an NER model (nlp_model); none is configured")
            raise ValueError(f"unknown entity {entity!r}; known: {', '.join(sorted(known))}")
        if not 0.0 <= options.score_threshold <= 1.0:
            raise ValueError("score_threshold must be between 0 and 1")
        if options.mask_keep < 0:
            raise ValueError("mask_keep must not be negative")
        allow_patterns = tuple(
            compile_pattern(p, f"allow_patterns[{i}]", allow_empty=True)
            for i, p in enumerate(options.allow_patterns)
        )
        analysis = (
            options.entities,
            options.score_threshold,
            options.allow,
            options.allow_patterns,
            options.recognizers,
        )
        return Plan(
            key=hashlib.blake2b(msgspec.json.encode(analysis), digest_size=16).digest(),
            wanted=wanted,
            threshold=options.score_threshold,
            allow=frozenset(v.strip().casefold() for v in options.allow),
            allow_patterns=allow_patterns,
            custom=custom,
        )
